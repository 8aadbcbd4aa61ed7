"""Rejected rows: the rows a run sets aside, why, and where they go.

Every rejected row is a :class:`~connectif_sync.contract.RejectedRow`, built here or by
:func:`~connectif_sync.validate.validate`. A run's :class:`Rejects` counts them by reason for the report,
stores them in the state store a batch at a time, in a thread of its own (so memory does not grow with them:
a source full of bad rows costs no more than a clean one), and keeps the first :data:`REJECTED_SAMPLE` for the
result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectif_sync.background import Serial
from connectif_sync.contract import RejectedRow
from connectif_sync.mappings import Mapping
from connectif_sync.shape import BAD_UTF8_REASON, repair_utf8, shape
from connectif_sync.store import StateStore
from connectif_sync.validate import DUPLICATE_REASON, MAX_VALUE_CHARS, source_refs, state_keys

REJECTED_SAMPLE = 1000  # rejected rows kept in a result (all are in the state store; counts are exact)
STORE_BATCH = 1000
"""Rejected rows written to the state store at once. Small enough that what is left for the end of the run
(the last batch, after the last chunk) is a few milliseconds: with 5,000, a dirty source's last batch took
0.03 s of a full scan's serial end (bench/README.md, session 13); each batch is one short transaction."""
STORE_AHEAD = 4
"""Batches handed to the writing thread and not stored yet, at most: when the store is slower than the run
(a source of bad rows only), the run waits rather than holding the rows."""

SUPPRESSED_REASON = (
    "suppressed (erased at the contact's request): never sent again; remove the row from the source, "
    "or withdraw with `connectif-sync unsuppress`"
)


class Rejects:
    """One run's rejected rows: counted by reason, stored in batches (not in a dry run), the first few kept.

    A dirty source sets aside a row in a hundred (10,000 per million, every run): they are counted by group
    and stored as they come, without a dictionary per row (only the first :data:`REJECTED_SAMPLE` get one).
    The batches are stored by a thread of their own (:class:`~connectif_sync.background.Serial`), in order:
    inserting 10,000 rows into the table and its four indexes took 0.07-0.09 s of the main thread's CPU per
    million-row run, the stage every chunk waits for (bench/README.md, session 18). :meth:`finish` waits for
    them; :meth:`stop` ends the thread of a run that failed. An in-memory SQLite store, which another thread
    cannot see, is written by the caller's thread.
    """

    def __init__(self, store: StateStore, obj: str, run_id: str | None, *, dry_run: bool) -> None:
        self.store, self.obj, self.run_id, self.dry_run = store, obj, run_id, dry_run
        self.reasons: dict[str, int] = {}
        self.sample: list[dict[str, Any]] = []
        self._batch: list[RejectedRow] = []
        self._writes = Serial("connectif-sync-rejects", ahead=STORE_AHEAD, inline=store.in_memory)

    def add(self, rows: Iterable[RejectedRow]) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return
        for key, n in Counter(r.reason_key for r in rows).items():
            self.reasons[key] = self.reasons.get(key, 0) + n
        room = REJECTED_SAMPLE - len(self.sample)
        if room > 0:
            self.sample.extend(r.as_dict() for r in rows[:room])
        if not self.dry_run:
            self._batch.extend(rows)
            if len(self._batch) >= STORE_BATCH:
                self.flush()

    def flush(self) -> None:
        """Hand the rows not stored yet to the writing thread (started by the first batch); an error of an
        earlier batch is raised here."""
        if self._batch and self.run_id is not None:
            self._writes.submit(partial(self.store.record_rejected, self.obj, self.run_id, self._batch))
        self._batch = []

    def finish(self) -> None:
        """Store the rest and wait until every row is stored (the run's end); raises a failed write's error."""
        self.flush()
        self._writes.close()

    def stop(self) -> None:
        """Wait for the rows handed over and end the writing thread, without raising (a run that failed: its
        own error is the one to see)."""
        self._writes.close(raise_error=False)


def suppressed_row(key: str, ref: str | None, mapping: Mapping, why: str | None) -> RejectedRow:
    """A row whose key is on the suppression list; the suppression's own reason is its value."""
    return RejectedRow(key, ref, mapping.key, SUPPRESSED_REASON, why)


def duplicate_row(key: str, mapping: Mapping) -> RejectedRow:
    """A confirmed row (found by its source hash, so not shaped) whose key an earlier row already had."""
    return RejectedRow(key, None, mapping.key, DUPLICATE_REASON)


def oversize_rows(
    mask: np.ndarray, keys: pa.Array, data: pa.Table, refs: list[str], sizes: np.ndarray, max_bytes: int
) -> list[RejectedRow]:
    """The rows of ``data`` too large for any file (``mask``), each naming its largest field.

    ``keys``, ``refs`` (source rows) and ``sizes`` (CSV bytes) are per row of ``data``; ``refs`` only for the
    masked rows.
    """
    rows = np.flatnonzero(mask)
    picked = data.take(pa.array(rows))
    names = list(picked.column_names)
    lengths = np.stack(
        [
            np.asarray(pc.fill_null(pc.binary_length(picked.column(c)), 0).to_numpy(zero_copy_only=False), np.int64)
            for c in names
        ],
        axis=1,
    )
    reason = (
        f"row larger than a whole import file may be ({max_bytes} bytes with the header): shorten this field in "
        "the source"
    )
    out = []
    for i, (key, ref) in enumerate(zip(keys.take(pa.array(rows)).to_pylist(), refs, strict=True)):
        largest = int(np.argmax(lengths[i]))
        value = f"the row takes {int(sizes[rows[i]])} bytes in the CSV, this field {int(lengths[i, largest])}"
        out.append(RejectedRow(key, ref, names[largest], reason, value))
    return out


def set_aside_bad_text(table: pa.Table, mapping: Mapping) -> tuple[pa.Table, list[RejectedRow], int]:
    """Set aside the rows holding a value that is not UTF-8 (:func:`~connectif_sync.shape.repair_utf8`).

    Such a value would make Connectif refuse the whole file (or crash the shaping), so its row is rejected
    with its key, source row, field and the bytes as found; a field declared ``on_invalid: empty`` is sent
    empty instead. Returns the other rows, the rejected entries and how many rows they are.
    """
    table, bad = repair_utf8(table, mapping.source_columns(), text_is_utf8=mapping.source_encoding == "UTF8")
    if not bad:
        return table, [], 0
    drop = np.zeros(table.num_rows, dtype=bool)
    problems: list[tuple[np.ndarray, str, list[bytes]]] = []
    for column, (mask, values) in bad.items():
        fields = [n for n, f in mapping.fields.items() if column in (f.column, f.country_column)]
        if fields and all(mapping.fields[n].on_invalid == "empty" for n in fields):
            continue  # the value is empty now, the row goes on
        drop |= mask
        problems.append((mask, fields[0] if fields else column, values))
    if not drop.any():
        return table, [], 0
    at = np.flatnonzero(drop)
    sub = table.take(pa.array(at))
    keys = state_keys(mapping, shape(sub, mapping, {mapping.key: mapping.fields[mapping.key]})).to_pylist()
    where = dict(zip(at.tolist(), range(len(at)), strict=True))
    refs = source_refs(mapping, sub, np.arange(len(at)))
    out: list[RejectedRow] = []
    for mask, name, values in problems:
        for row, raw in zip(np.flatnonzero(mask).tolist(), values, strict=True):
            text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")  # bytes as found, visibly
            text = text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."
            i = where[row]
            key = keys[i] if keys[i] is not None else (text if name == mapping.key else None)
            out.append(RejectedRow(key, refs[i], name, BAD_UTF8_REASON, text))
    return table.filter(pa.array(~drop)), out, int(drop.sum())
