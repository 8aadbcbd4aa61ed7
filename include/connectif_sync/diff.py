"""Change detection: which rows of a run are new, changed, unchanged, suppressed, duplicates or deleted.

A row is compared by a 64-bit hash of its CSV values with the hash Connectif confirmed (the state store):
``new`` (key never confirmed), ``changed`` (another hash), ``unchanged`` (the same hash: not sent),
``deleted`` (confirmed keys the source no longer has; full scans only, reported, never deleted in Connectif
by this library). Keys on the suppression list (contacts erased on request) are never sent, in any mode.

A full scan also hashes each row's *source* values together with the mapping (:func:`source_hashes`): a row
whose source hash Connectif confirmed is unchanged without being shaped, validated or rendered. Changing the
mapping changes every source hash (:func:`mapping_fingerprint`), so nothing stale is skipped.

Memory: 8 bytes per distinct key for the duplicate rule and, in a full scan, 17 bytes per confirmed key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectif_sync.extract import PROBE_HASH_COLUMN
from connectif_sync.hashing import MASK_COLUMNS, empty_masks_of, hash_columns, hash_strings, mix64
from connectif_sync.mappings import Mapping
from connectif_sync.shape import to_text
from connectif_sync.store import StateIndex, StateStore
from connectif_sync.validate import KeySet

CHANGED_SAMPLE = 20  # changed rows kept with their new values, for the guardrail's approval request
DELETED_SAMPLE = 1000  # deleted keys listed by name in a result (the count is always exact)


def mapping_fingerprint(mapping: Mapping) -> np.uint64:
    """A 64-bit value that changes whenever the mapping's output could (fields, types, options, key)."""
    text = repr((mapping.key, mapping.partition_by, sorted(mapping.fields.items())))
    return np.uint64(hash_strings(pa.array([text]))[0])


def signed(fingerprint: np.uint64) -> int:
    """The fingerprint as the signed 64-bit integer SQL hash expressions take."""
    return int(np.array([fingerprint], np.uint64).view(np.int64)[0])


def database_hashes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The source hashes a database computed (column :data:`PROBE_HASH_COLUMN`) as int64, NULL as 0: an
    integer column as is (PostgreSQL, SQLite's extension, MariaDB's CRCs), MySQL's 8 bytes of MD5 as their
    first 60 bits."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        try:
            fixed = column.cast(pa.binary(8))
        except pa.ArrowInvalid as exc:
            raise ValueError(
                f"a MySQL source hash is not 8 bytes ({exc}): was the query built by connectif_sync?"
            ) from exc
        raw = np.frombuffer(fixed.buffers()[1], ">u8")[fixed.offset : fixed.offset + len(fixed)]
        out = (raw >> np.uint64(4)).astype(np.int64)
        if fixed.null_count:
            out[~np.asarray(fixed.is_valid().to_numpy(zero_copy_only=False), bool)] = 0
        return out
    if not pa.types.is_integer(column.type):  # NULL all through a batch: typed null by the driver
        column = pc.cast(column, pa.int64())
    return np.asarray(pc.fill_null(column, 0).to_numpy(), dtype=np.int64)


def source_hashes(table: pa.Table, mapping: Mapping, fingerprint: np.uint64) -> np.ndarray:
    """A hash of each row's source values and of the mapping: equal hashes mean equal CSV output. The
    database's own (column ``PROBE_HASH_COLUMN``, see ``extract.source_hash_sql``) where the read has it."""
    if PROBE_HASH_COLUMN in table.column_names:
        return database_hashes(table.column(PROBE_HASH_COLUMN)).view(np.uint64)
    cols = [to_text(table.column(c)) for c in mapping.source_columns() if c != mapping.updated_at]
    h = hash_columns(cols)
    h ^= fingerprint
    return mix64(h)


@dataclass
class Verdict:
    """Per row of a validated chunk: known to Connectif (``found``), with the same CSV (``same``), or
    suppressed (``gone``). Suppression wins over everything else."""

    found: np.ndarray
    same: np.ndarray
    gone: np.ndarray

    @property
    def new(self) -> np.ndarray:
        return ~self.found & ~self.gone

    @property
    def changed(self) -> np.ndarray:
        return self.found & ~self.same & ~self.gone

    @property
    def unchanged(self) -> np.ndarray:
        return self.same & ~self.gone

    def to_send(self, *, full_resync: bool) -> np.ndarray:
        """New and changed rows; every row but the suppressed ones in a full resync."""
        return (np.ones(len(self.same), bool) if full_resync else ~self.same) & ~self.gone


def classify(row_hashes: np.ndarray, found: np.ndarray, confirmed: np.ndarray, suppressed: np.ndarray) -> Verdict:
    """Compare the rows' CSV hashes with the confirmed ones (``found``/``confirmed`` per row, from the state
    index or the store) and mark the suppressed ones (``suppressed``: per row)."""
    return Verdict(found=found, same=found & (confirmed == row_hashes), gone=suppressed)


@dataclass
class Suppression:
    """Keys never to send again (erased contacts): their hashes, sorted, and each one's reason."""

    reasons: dict[int, str]
    hashes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.hashes = np.array(sorted(self.reasons), dtype=np.int64)

    @classmethod
    def of(cls, store: StateStore, obj: str) -> Suppression:
        return cls(store.suppressed_hashes(obj))

    def mask(self, key_hashes: np.ndarray) -> np.ndarray:
        """Which of ``key_hashes`` (signed) are suppressed."""
        if not len(self.hashes):
            return np.zeros(len(key_hashes), bool)
        return np.isin(key_hashes, self.hashes)

    def why(self, key_hash: int) -> str | None:
        return self.reasons.get(key_hash)


class IndexedSeen:
    """The keys kept so far, for the duplicate rule: confirmed keys as a flag per state-index entry
    (``StateIndex.seen``, which also drives deletion detection), other keys in a :class:`KeySet`.

    A full scan's unchanged rows are found by their source hash and already know their index entry, so
    registering a million of them costs a few array operations instead of a million hash insertions.
    """

    def __init__(self, index: StateIndex | None) -> None:
        self.index = index if index is not None and len(index) else None
        self.others = KeySet()
        self._first: np.ndarray | None = None  # per index entry: where it first appears in the current batch

    def add_positions(self, at: np.ndarray) -> np.ndarray:
        """Register the keys of index entries ``at``; return the mask of those already kept (earlier, or
        earlier in ``at``)."""
        assert self.index is not None
        seen = self.index.seen
        dup = seen[at]
        if len(at) <= 1:
            seen[at] = True
            return dup
        before = np.count_nonzero(seen)
        seen[at] = True
        if np.count_nonzero(seen) - before == len(at) - np.count_nonzero(dup):
            return dup  # each entry not seen before came once: no repeat inside ``at`` (the usual case)
        # Repeats inside ``at`` without sorting it: write each row's ordinal at its entry in reverse order, so
        # that the first occurrence's ordinal is the one that stays.
        if self._first is None:
            self._first = np.empty(len(self.index), dtype=np.int64)
        ordinal = np.arange(len(at))
        self._first[at[::-1]] = ordinal[::-1]
        dup |= self._first[at] != ordinal
        return dup

    def add_new(self, hashes: np.ndarray) -> np.ndarray:
        """:meth:`KeySet.add_new` over both kinds of keys."""
        if self.index is None:
            return self.others.add_new(hashes)
        found, at = self.index.positions(hashes.view(np.int64))
        dup = np.empty(len(hashes), dtype=bool)
        dup[found] = self.add_positions(at[found])
        dup[~found] = self.others.add_new(hashes[~found])
        return dup


@dataclass
class KnownRows:
    """The rows of a chunk found unchanged by their source hash (state-index positions ``at``): those whose
    key an earlier row already had (``duplicate``), those suppressed since Connectif confirmed them
    (``gone``), and the rest, unchanged."""

    at: np.ndarray
    duplicate: np.ndarray
    gone: np.ndarray

    @property
    def unchanged(self) -> int:
        return int(len(self.at) - self.duplicate.sum() - self.gone.sum())


def split_known(at: np.ndarray, index: StateIndex, seen: IndexedSeen, suppression: Suppression) -> KnownRows:
    """Register the known rows' keys for the duplicate rule (before the chunk's other rows: see
    :mod:`connectif_sync.validate`) and set aside those suppressed after they were confirmed."""
    duplicate = seen.add_positions(at)
    gone = suppression.mask(index.key_hashes[at]) & ~duplicate
    return KnownRows(at=at, duplicate=duplicate, gone=gone)


def deleted_keys(index: StateIndex | None, store: StateStore, obj: str) -> tuple[int, list[str]]:
    """After a full scan: how many confirmed keys the source no longer has, and the first
    :data:`DELETED_SAMPLE` of them by name. An incremental run (no index) detects none."""
    if index is None:
        return 0, []
    unseen = index.unseen()
    if not len(unseen) or store._missing:
        return len(unseen), []
    return len(unseen), store.keys_for(obj, unseen.tolist(), limit=DELETED_SAMPLE)


@dataclass
class ChangeSet:
    """The rows of a run that Connectif confirmed before and that would change: their key hashes, which
    output columns would be empty (bit i: ``columns[i]``), and the first few with their new values.

    16 bytes per changed row: a normal run changes a few rows; a run that would change every row is exactly
    the run the guardrail must look at, and even then a million rows cost 16 MB.
    """

    columns: list[str]
    key_hashes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    empty_masks: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    sample: list[dict[str, Any]] = field(default_factory=list)  # {"key", "key_hash", "after": {column: value}}
    _parts: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    def add(self, keys: pa.Array, key_hashes: np.ndarray, table: pa.Table, masks: np.ndarray) -> None:
        self._parts.append((key_hashes, masks))
        room = CHANGED_SAMPLE - len(self.sample)
        if room > 0 and len(key_hashes):
            head = table.slice(0, room).to_pylist()
            for k, h, values in zip(keys.slice(0, room).to_pylist(), key_hashes[:room].tolist(), head, strict=True):
                self.sample.append({"key": k, "key_hash": h, "after": values})

    def close(self) -> None:
        if self._parts:
            self.key_hashes = np.concatenate([self.key_hashes, *(p[0] for p in self._parts)])
            self.empty_masks = np.concatenate([self.empty_masks, *(p[1] for p in self._parts)])
            self._parts = []

    def __len__(self) -> int:
        return len(self.key_hashes) + sum(len(p[0]) for p in self._parts)


def empty_masks(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Per row, bit i set when ``columns[i]`` (the first :data:`MASK_COLUMNS`) is empty (null or "")."""
    return empty_masks_of([table.column(c) for c in columns[:MASK_COLUMNS]], table.num_rows)
