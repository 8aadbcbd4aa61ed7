"""Validate: set aside every row Connectif would reject, with its key, field and reason.

A row is rejected when a field could not be shaped (and the field's ``on_invalid`` is ``reject``), when a
``required`` field (or the key) is empty, or when its key repeats one already kept.

**Duplicate-key rule.** Rows are extracted in the mapping's ``order_by`` order; among the rows of one key
that are otherwise valid, the *first* is kept and each later one is rejected with the reason
``duplicate key``. (An invalid row never blocks a later valid row of the same key.) For partitioned
objects (coupons) a key is unique within its partition. With an ``updated_at`` watermark only the rows of
the window are compared with each other. In a full scan, rows whose source Connectif already confirmed are
not reshaped; inside one chunk (32,768 rows by default; a probed full scan, :mod:`connectif_sync.probe`, takes
them a page of :data:`~connectif_sync.probe.PROBE_SPAN` chunks at a time) their keys are counted before the
other rows', so should a changed row and an unchanged confirmed row of one chunk (page) share a key, the
confirmed one is kept.

Keys are tracked as 64-bit hashes in a table of the hashes themselves (:class:`KeySet`), 8 bytes a slot instead
of a Python set's ~100 a key, so that memory stays flat at millions of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectif_sync.contract import RejectedRow
from connectif_sync.hashing import MAX_LOAD, hash_strings, keyset_add, keyset_rehash, stable_argsort
from connectif_sync.mappings import Mapping
from connectif_sync.shape import ShapedChunk

MAX_VALUE_CHARS = 200  # of a rejected value kept in the rejected-rows store
DUPLICATE_REASON = "duplicate key: an earlier row with the same key was kept"


class SeenKeys(Protocol):
    """The keys kept so far, for the duplicate rule: a :class:`KeySet`, or the pipeline's
    :class:`~connectif_sync.diff.IndexedSeen` (confirmed keys flagged in the state index)."""

    def add_new(self, hashes: np.ndarray) -> np.ndarray: ...


class KeySet:
    """A set of uint64 key hashes: with the C accelerator an open-addressing table of the keys (8 bytes a slot,
    under :data:`~connectif_sync.hashing.MAX_LOAD`, doubled as it fills), else sorted numpy runs that merge
    geometrically (amortised O(n log n)).

    (The table replaced the sorted runs as the main path in session 15: a first run's duplicate rule 0.09 ->
    0.03 s of the main thread per million keys. Sorting each chunk, searching every run and merging them was
    a seventh of that thread. While the table doubles it holds both sizes: 12-14 MB more at its peak than the
    runs and their merge buffer, a million keys or three; bench/README.md.)"""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []
        self._table: np.ndarray | None = np.zeros(1024, np.uint64) if keyset_add is not None else None
        self._count = 0  # keys in the table
        self._zero = False  # whether the key 0 (the table's empty slot) was added

    def __len__(self) -> int:
        if self._table is not None:
            return self._count + self._zero
        return sum(len(r) for r in self._runs)

    def add_new(self, hashes: np.ndarray) -> np.ndarray:
        """Add ``hashes``; return the mask of those already present (earlier, or earlier in this array)."""
        hashes = np.ascontiguousarray(hashes).view(np.uint64)
        if self._table is None or keyset_add is None or keyset_rehash is None:
            return self._add_to_runs(hashes)
        zeros = hashes == 0
        if zeros.any():  # never stored: its first occurrence ever is the new one
            dup = np.ones(len(hashes), dtype=bool)
            first = int(np.flatnonzero(zeros)[0])
            dup[first] = self._zero
            self._zero = True
            rest = np.flatnonzero(~zeros)
            dup[rest] = self.add_new(hashes[rest])
            return dup
        while (self._count + len(hashes)) >= MAX_LOAD * len(self._table):
            bigger = np.zeros(2 * len(self._table), np.uint64)
            keyset_rehash(self._table, bigger)
            self._table = bigger
        dup = np.empty(len(hashes), dtype=np.uint8)
        self._count += keyset_add(self._table, hashes, dup)
        return dup.view(bool)

    def _contains_sorted(self, sorted_h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(sorted_h), dtype=bool)
        for run in self._runs:  # runs are never empty
            # Sorted queries make searchsorted walk each run in order: several times faster than random probes.
            idx = np.searchsorted(run, sorted_h)
            idx[idx == len(run)] = 0
            found |= run[idx] == sorted_h
        return found

    def _add_to_runs(self, hashes: np.ndarray) -> np.ndarray:
        """:meth:`add_new` without the C accelerator."""
        order = stable_argsort(hashes)
        sorted_h = hashes[order]
        dup_sorted = self._contains_sorted(sorted_h)
        if len(sorted_h) > 1:
            starts = np.flatnonzero(np.concatenate(([True], sorted_h[1:] != sorted_h[:-1])))
            if len(starts) < len(sorted_h):  # repeated keys: only each one's first occurrence in ``hashes`` is new
                first = np.minimum.reduceat(order, starts)
                dup_sorted |= order != np.repeat(first, np.diff(np.append(starts, len(order))))
        dup = np.empty(len(hashes), dtype=bool)
        dup[order] = dup_sorted
        fresh = sorted_h[~dup_sorted]  # sorted, and unique: repeats and known keys are gone
        if len(fresh):
            self._runs.append(fresh)
            while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
                last = self._runs.pop()  # runs are disjoint, so a sort of both is their union
                merged = self._runs[-1]
                n = len(merged)
                # Grown in place (realloc, which moves no memory for large arrays) rather than concatenated:
                # at millions of keys a copy would briefly hold every key twice, the largest spike of a run.
                merged.resize(n + len(last), refcheck=False)
                merged[n:] = last
                del last
                merged.sort(kind="stable")  # timsort: two sorted runs merge in one linear pass
        return dup


@dataclass
class Validated:
    """The outcome of :func:`validate` for one chunk."""

    valid: pa.Table  # output columns, for the kept rows, in source order
    keys: pa.Array  # state key of each kept row (partition-qualified for partitioned objects)
    key_hashes: np.ndarray  # uint64 hash of each kept key
    positions: np.ndarray  # index of each kept row in the chunk
    rejected: list[RejectedRow] = field(default_factory=list)
    invalid_rows: int = 0
    duplicate_rows: int = 0


def source_ref(mapping: Mapping, source: pa.Table | None, row: int) -> str:
    """How a user finds a rejected row in the source: the ``order_by`` columns (e.g. ``id=42``)."""
    return source_refs(mapping, source, np.array([row]))[0]


def source_refs(mapping: Mapping, source: pa.Table | None, rows: np.ndarray) -> list[str]:
    if source is None or not mapping.order_by or not all(c in source.column_names for c in mapping.order_by):
        return [f"row {r + 1} of the chunk" for r in rows.tolist()]
    idx = pa.array(rows)
    cols = [(c, source.column(c).take(idx).to_pylist()) for c in mapping.order_by]
    if len(cols) == 1:  # the usual key: one string per row, without a join (10,000 rejected rows per million)
        name, values = cols[0]
        return [f"{name}={v}" for v in values]
    return [", ".join(f"{c}={vals[i]}" for c, vals in cols) for i in range(len(rows))]


def state_keys(mapping: Mapping, chunk: ShapedChunk) -> pa.Array:
    """The key the state store tracks: the key field, prefixed by the partition for partitioned objects."""
    key = chunk.columns[mapping.key]
    if mapping.partition_by and chunk.source is not None:
        part = pc.cast(chunk.source.column(mapping.partition_by).combine_chunks(), pa.string())
        key = pc.binary_join_element_wise(part, key, "/")
    return key


def _values(chunk: ShapedChunk, mapping: Mapping, name: str, rows: np.ndarray) -> list[str | None]:
    spec = mapping.fields.get(name) or mapping.line_fields.get(name)
    if spec is None or chunk.source is None or spec.column not in chunk.source.column_names:
        return [None] * len(rows)
    out: list[str | None] = []
    for v in chunk.source.column(spec.column).take(pa.array(rows)).to_pylist():
        text = None if v is None else str(v)
        out.append(text if text is None or len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "...")
    return out


def validate(chunk: ShapedChunk, mapping: Mapping, seen: SeenKeys | None = None) -> Validated:
    """Split a shaped chunk into valid rows and rejected ones (see the module docstring for the rules)."""
    n = chunk.num_rows
    columns = dict(chunk.columns)
    reject_mask = np.zeros(n, dtype=bool)
    reasons: list[tuple[np.ndarray, str, str]] = []
    for p in chunk.problems:
        spec = mapping.fields.get(p.field)
        if spec is not None and spec.on_invalid == "empty":
            columns[p.field] = pc.if_else(pa.array(p.mask), pa.scalar(None, pa.string()), columns[p.field])
            continue
        reject_mask |= p.mask
        reasons.append((p.mask, p.field, p.reason))
    for name, spec in mapping.fields.items():
        if spec.required or name == mapping.key:
            empty = np.asarray(pc.is_null(columns[name]).to_numpy(zero_copy_only=False), dtype=bool)
            empty &= ~reject_mask  # a value that failed shaping is reported once, with its real reason
            if empty.any():
                reject_mask |= empty
                reasons.append((empty, name, "required field is empty"))
    keys = state_keys(mapping, ShapedChunk(columns=columns, source=chunk.source))
    dup = np.zeros(n, dtype=bool)
    all_hashes = hash_strings(keys)
    if seen is not None:
        ok = ~reject_mask
        dup[ok] = seen.add_new(all_hashes[ok])
        if dup.any():
            reasons.append((dup, mapping.key, DUPLICATE_REASON))
    rejected: list[RejectedRow] = []
    for mask, name, reason in reasons:
        rows = np.flatnonzero(mask)
        refs = source_refs(mapping, chunk.source, rows)
        values = _values(chunk, mapping, name, rows)
        for k, ref, v in zip(keys.take(pa.array(rows)).to_pylist(), refs, values, strict=True):
            rejected.append(RejectedRow(k, ref, name, reason, v))
    keep = ~(reject_mask | dup)
    positions = np.flatnonzero(keep)
    if len(positions) == n:
        valid, kept_keys = pa.table(columns), keys
    else:
        sel = pa.array(keep)
        valid = pa.table({name: col.filter(sel) for name, col in columns.items()})
        # the key column is the keys themselves unless partitioned: filtered once
        kept = valid.column(mapping.key)
        same = keys is columns[mapping.key] and kept.num_chunks == 1
        kept_keys = kept.chunk(0) if same else keys.filter(sel)
    return Validated(
        valid=valid,
        keys=kept_keys,
        key_hashes=all_hashes[keep],
        positions=positions,
        rejected=rejected,
        invalid_rows=int(reject_mask.sum()),
        duplicate_rows=int(dup.sum()),
    )
