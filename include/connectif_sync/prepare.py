"""The work done on each chunk before validation, off the main thread: set aside values that are not UTF-8,
hash the source rows, skip those whose source Connectif confirmed, shape the rest.

It runs in a background thread (or in the reader threads, when the probe reads the source): Arrow, numpy,
the database drivers and the C hash release the GIL, so it overlaps with validation and writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectif_sync.contract import RejectedRow
from connectif_sync.diff import source_hashes
from connectif_sync.hashing import as_signed
from connectif_sync.mappings import Mapping
from connectif_sync.rejects import set_aside_bad_text
from connectif_sync.shape import ShapedChunk, shape, to_text
from connectif_sync.store import StateIndex


@dataclass
class Prepared:
    """One chunk, ready for validation: how many rows it had, the latest ``updated_at`` among them, the
    state-index positions of the rows whose source Connectif confirmed, and the other rows, shaped."""

    rows: int
    high: str | None
    known_at: np.ndarray  # positions in the state index of the rows unchanged by source hash
    src: np.ndarray  # source hash of each row of ``shaped``
    shaped: ShapedChunk | None  # the other rows, shaped (their source table is ``shaped.source``)
    rejected: list[RejectedRow] = field(default_factory=list)  # rows set aside before shaping
    invalid: int = 0  # how many rows ``rejected`` names

    @classmethod
    def empty(cls, high: str | None = None) -> Prepared:
        """No rows (``high``: a high-water mark found otherwise, e.g. by the probe's one query of it)."""
        return cls(0, high, np.zeros(0, np.int64), np.zeros(0, np.int64), None)


def updated_values(table: pa.Table, mapping: Mapping) -> pa.Array | None:
    """The ``updated_at`` column as read (aware timestamps in UTC, without their zone), or None. Text is made
    only of what needs it (:func:`to_text`): the rows sent, and each chunk's maximum."""
    if not mapping.updated_at or mapping.updated_at not in table.column_names:
        return None
    col = table.column(mapping.updated_at).combine_chunks()
    if pa.types.is_timestamp(col.type) and col.type.tz is not None:
        col = pc.cast(col, pa.timestamp(col.type.unit))
    return col


def chunk_high(table: pa.Table, mapping: Mapping) -> str | None:
    """The latest ``updated_at`` of ``table`` as text (the order of the text is the order of the times)."""
    updated = updated_values(table, mapping)
    if updated is None or updated.null_count == len(updated):
        return None
    top: str | None = to_text(pa.array([pc.max(updated).as_py()], updated.type))[0].as_py()
    return top


def later(a: str | None, b: str | None) -> str | None:
    """The later of two high-water marks, either of which may be missing."""
    return b if a is None else a if b is None else max(a, b)


def prepare(
    table: pa.Table,
    mapping: Mapping,
    fingerprint: np.uint64,
    index: StateIndex | None,
    high: str | None = None,
    known_at: np.ndarray | None = None,
    rows: int | None = None,
) -> Prepared:
    """Hash the source rows of ``table``, set aside those whose source hash ``index`` has (when given), shape
    the rest. ``high``, ``known_at`` and ``rows`` add what a probe already found (:mod:`connectif_sync.probe`).

    Values that are not UTF-8 are found first: their rows are set aside, the others go on.
    """
    rows = table.num_rows if rows is None else rows
    table, rejected, invalid = set_aside_bad_text(table, mapping)
    src = as_signed(source_hashes(table, mapping, fingerprint))
    high = later(high, chunk_high(table, mapping))
    at_before = known_at if known_at is not None else np.zeros(0, np.int64)
    known, at = index.find_sources(src) if index is not None else (np.zeros(len(src), bool), at_before)
    if not known.any():
        shaped = shape(table, mapping) if table.num_rows else None
        return Prepared(rows, high, at_before, src, shaped, rejected, invalid)
    rest = table.filter(pa.array(~known))
    return Prepared(
        rows,
        high,
        np.concatenate([at_before, at[known]]),
        src[~known],
        shape(rest, mapping) if rest.num_rows else None,
        rejected,
        invalid,
    )
