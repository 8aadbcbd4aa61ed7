"""The sync run: extract -> shape -> validate -> detect changes -> chunk -> report, in one streaming pass.

Memory stays bounded: one chunk of rows is in flight at a time, plus 8 bytes per distinct key (duplicate
detection) and, in a full scan, 17 bytes per confirmed key of the state (change and deletion detection).

Change detection compares a 64-bit hash of each row's CSV values with the hash Connectif confirmed
(:mod:`connectif_sync.state`): ``new`` (key never confirmed), ``changed`` (other hash), ``unchanged`` (same
hash: not sent), ``deleted`` (confirmed keys the source no longer has; full scans only, reported, never
deleted in Connectif by this library). ``full_resync`` sends unchanged rows too. Keys on the state store's
suppression list (contacts erased on request, :meth:`StateStore.suppress`) are never sent, in any mode:
their rows are set aside as ``suppressed`` with the suppression's reason.

A full scan also hashes each row's *source* values together with the mapping: a row whose source hash
Connectif confirmed is unchanged without being shaped, validated or rendered, which is most of the cost of
a second run. Changing the mapping changes every source hash, so nothing stale is skipped. On a table keyed
by an integer, the scan *probes* first (:func:`_probe`): the database computes the source hashes itself
(PostgreSQL and MySQL in SQL, where every read of the sync adds them; SQLite with the ``_sqlite_hash``
extension, the same value as the Python hash), so only each row's key, ``updated_at`` and hash are read, and
the unconfirmed rows are then read in full by key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connectif_sync.chunk import DEFAULT_MAX_FILE_BYTES, ChunkFile, ChunkWriter
from connectif_sync.extract import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_READERS,
    PROBE_HASH_COLUMN,
    arrow_connect,
    arrow_source,
    extract_arrow,
    integer_ranges,
    prefetch,
    probe_query,
    read_ranges,
    read_rows,
    read_table,
    resume_probe,
    source_hash_sql,
    sqlite_hash_extension,
)
from connectif_sync.hashing import as_signed, hash_columns, hash_csv_rows, hash_strings, mix64
from connectif_sync.mappings import Mapping, check_source_columns, resolve_mapping
from connectif_sync.shape import BAD_UTF8_REASON, ShapedChunk, repair_utf8, shape, to_text
from connectif_sync.state import StateIndex, StateStore
from connectif_sync.validate import MAX_VALUE_CHARS, KeySet, source_refs, state_keys, validate

DEFAULT_LOOKBACK = timedelta(hours=1)
DELETED_SAMPLE = 1000  # deleted keys listed by name in a result (the count is always exact)
REJECTED_SAMPLE = 1000  # rejected rows kept in a result (all are in the state store; counts are exact)
IMPORT_QUEUE = 10  # Connectif accepts 10 queued imports per account
REQUESTS_PER_MINUTE = 90  # the shared budget the provider defaults to (account limit: 100/min)


@dataclass
class SyncReport:
    """Counts per stage of one run; ``as_dict()`` is JSON-serialisable (DAGs log it and push it to XCom)."""

    object: str
    run_id: str | None = None
    mode: str = "full"  # full | incremental | full_resync | plan
    since: str | None = None
    high_water: str | None = None
    extracted: int = 0
    invalid: int = 0
    duplicate: int = 0
    oversize: int = 0
    unchanged: int = 0
    new: int = 0
    changed: int = 0
    deleted: int = 0
    suppressed: int = 0
    sent: int = 0
    files: int = 0
    bytes: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    api_requests: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CHANGED_SAMPLE = 20  # changed rows kept with their new values, for the guardrail's approval request
MASK_COLUMNS = 63  # output columns tracked by the empty-field masks (bits of an int64)


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
    masks = np.zeros(table.num_rows, np.int64)
    for i, c in enumerate(columns[:MASK_COLUMNS]):
        col = table.column(c)
        empty = pc.fill_null(pc.equal(pc.utf8_length(col), 0), True) if col.null_count < len(col) else None
        bits = (
            np.ones(table.num_rows, bool)
            if empty is None
            else np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
        )
        masks |= bits.astype(np.int64) << np.int64(i)
    return masks


@dataclass
class SyncResult:
    """What a run produced: the report, the files to import (in order), and samples of the deleted keys
    and rejected rows (the first 1000 each; all rejected rows are in the state store)."""

    report: SyncReport
    files: list[ChunkFile]
    deleted_keys: list[str]
    rejected: list[dict[str, Any]]
    changes: ChangeSet | None = None  # the confirmed rows that would change (for the guardrail)

    def as_dict(self) -> dict[str, Any]:
        return {
            "report": self.report.as_dict(),
            "files": [f.as_dict() for f in self.files],
            "deleted_keys": list(self.deleted_keys),
            "rejected": sum(self.report.rejected_by_reason.values()),
        }


def import_requests(files: list[ChunkFile]) -> dict[str, Any]:
    """The API requests the imports of ``files`` need at least: create, one status poll, and the error
    report when there are errors; and how they fit the account's queue (10 imports at a time)."""
    n = len(files)
    return {
        "imports": n,
        "min_requests": 2 * n,
        "max_requests_if_every_import_has_errors": 3 * n,
        "queue_waves": -(-n // IMPORT_QUEUE) if n else 0,
        "min_minutes_at_rate_limit": round(2 * n / REQUESTS_PER_MINUTE, 2),
    }


def _updated_values(table: pa.Table, mapping: Mapping) -> pa.Array | None:
    """The ``updated_at`` column as read (aware timestamps in UTC, without their zone), or None. Text is made
    only of what needs it (:func:`to_text`): the rows sent, and each chunk's maximum."""
    if not mapping.updated_at or mapping.updated_at not in table.column_names:
        return None
    col = table.column(mapping.updated_at).combine_chunks()
    if pa.types.is_timestamp(col.type) and col.type.tz is not None:
        col = pc.cast(col, pa.timestamp(col.type.unit))
    return col


def run_sync(
    obj: str,
    source_url: str,
    out_dir: str | Path | None,
    *,
    state_url: str | None = None,
    mapping: str | Path | Mapping | None = None,
    full_resync: bool = False,
    incremental: bool = False,
    lookback: timedelta = DEFAULT_LOOKBACK,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    dry_run: bool = False,
    run_id: str | None = None,
    extract_path: str = "auto",
    readers: int = DEFAULT_READERS,
) -> SyncResult:
    """Sync one bulk object (contacts, products, coupons): write the CSV chunks of new and changed rows.

    * ``incremental``: extract only rows with ``updated_at`` at or after the store's watermark (minus
      ``lookback``); falls back to a full scan when there is no watermark yet. No deletion detection.
    * ``full_resync``: send every valid row, changed or not (state is still compared, for the report).
    * ``dry_run``: compute everything (files, bytes, requests) but write nothing anywhere.
    * ``readers``: connections that read a full scan of an integer-keyed table at once (ADBC sources).

    Files are NOT committed to the state: call :meth:`StateStore.confirm_file` / ``confirm_import`` for
    each after Connectif imported it.
    """
    started = time.perf_counter()
    if obj == "purchases":
        raise ValueError("purchases go through the API one by one: use connectif_sync.purchase_payloads()")
    use_system_allocator()
    if out_dir is None and not dry_run:
        raise ValueError("run_sync needs out_dir for the chunk files (or dry_run=True)")
    m = resolve_mapping(obj, mapping)
    check_source_columns(m, source_url)
    store = StateStore(state_url, readonly=dry_run)
    try:
        since = store.next_since(obj, lookback) if incremental and m.updated_at else None
        mode = "plan" if dry_run else ("full_resync" if full_resync else ("incremental" if since else "full"))
        report = SyncReport(object=obj, mode=mode, since=since.isoformat(sep=" ") if since else None)
        if not dry_run:
            report.run_id = store.begin_run(obj, mode, since, run_id)
        index = store.load_index(obj) if since is None else None
        writer = ChunkWriter(out_dir, obj, m.output_columns, max_bytes=max_file_bytes, dry_run=dry_run)
        seen = _IndexedSeen(index)
        rejected = _Rejects(store, obj, report.run_id, dry_run)
        suppressed = store.suppressed_hashes(obj)  # keys never to send again (erased contacts), with reasons
        suppressed_keys = np.array(sorted(suppressed), dtype=np.int64)
        high: str | None = None
        chunks = extract_arrow(source_url, m, since=since, chunk_rows=chunk_rows, path=extract_path, readers=readers)
        fingerprint = mapping_fingerprint(m)
        skip_known = index is not None and len(index) > 0 and not full_resync
        changes = ChangeSet(list(m.output_columns))

        def prepare(table: pa.Table) -> _Prepared:
            """Background thread: hash the source rows, skip those Connectif confirmed, shape the rest."""
            return _prepare(table, m, fingerprint, index if skip_known else None)

        # Extraction runs in reader threads, hashing and shaping in a background thread (or, when a probe
        # reads the source, in the reader threads too), validation onwards in this one: Arrow, numpy, the
        # database drivers and the C hash release the GIL, so both cores work at once.
        probed = _probe(source_url, m, index, fingerprint, chunk_rows, readers) if skip_known else None
        if probed is not None:
            prepared: Iterator[_Prepared] = probed
        else:
            chunks = extract_arrow(source_url, m, since=since, chunk_rows=chunk_rows, path=extract_path,
                                   readers=readers, source_hash=_signed(fingerprint))  # fmt: skip
            prepared = prefetch(prepare(t) for t in chunks)
        for prep in prepared:
            report.extracted += prep.rows
            if prep.rejected:  # values that are not UTF-8: set aside before hashing and shaping
                report.invalid += prep.invalid
                rejected.add(prep.rejected)
            if prep.high is not None:
                high = prep.high if high is None or prep.high > high else high
            if len(prep.known_at):
                # Rows whose source is exactly what Connectif confirmed: unchanged, and their keys count for
                # the duplicate rule before this chunk's other rows (see the module docstring).
                assert index is not None
                dup_known = seen.add_positions(prep.known_at)
                gone_known = np.zeros(len(dup_known), bool)
                if len(suppressed_keys):  # confirmed before the key was suppressed: set aside now
                    known_keys = index.key_hashes[prep.known_at]
                    gone_known = np.isin(known_keys, suppressed_keys) & ~dup_known
                    if gone_known.any():
                        report.suppressed += int(gone_known.sum())
                        names = store.keys_for(obj, known_keys[gone_known].tolist())
                        hashes = as_signed(hash_strings(pa.array(names, pa.string()))).tolist()
                        for k, h in zip(names, hashes, strict=True):
                            rejected.append(_suppressed_row(k, None, m, suppressed.get(h)))
                report.unchanged += int(len(prep.known_at) - dup_known.sum() - gone_known.sum())
                if dup_known.any():
                    report.duplicate += int(dup_known.sum())
                    reason = "duplicate key: an earlier row with the same key was kept"
                    for k in store.keys_for(obj, index.key_hashes[prep.known_at][dup_known].tolist()):
                        rejected.append({"key": k, "source_ref": None, "field": m.key, "reason": reason, "value": None})
            if prep.shaped is None:
                continue
            table_rest = prep.shaped.source
            assert table_rest is not None
            updated, src_rest = _updated_values(table_rest, m), prep.src
            checked = validate(prep.shaped, m, seen)
            report.invalid += checked.invalid_rows
            report.duplicate += checked.duplicate_rows
            rejected.add(checked.rejected)
            if checked.valid.num_rows == 0:
                continue
            row_hash_u, row_sizes = hash_csv_rows([checked.valid.column(c) for c in m.output_columns])
            row_hash = as_signed(row_hash_u)
            key_hash = as_signed(checked.key_hashes)
            if index is not None:
                found, confirmed = index.lookup(key_hash)
            else:
                found, confirmed = store.lookup(obj, key_hash)
            same = found & (confirmed == row_hash)
            gone = np.isin(key_hash, suppressed_keys) if len(suppressed_keys) else np.zeros(len(same), bool)
            if gone.any():
                report.suppressed += int(gone.sum())
                rows = np.flatnonzero(gone)
                refs = source_refs(m, table_rest, checked.positions[rows])
                for k, ref, h in zip(checked.keys.take(pa.array(rows)).to_pylist(), refs, key_hash[rows].tolist(),
                                     strict=True):  # fmt: skip
                    rejected.append(_suppressed_row(k, ref, m, suppressed.get(h)))
            report.new += int((~found & ~gone).sum())
            report.changed += int((found & ~same & ~gone).sum())
            report.unchanged += int((same & ~gone).sum())
            send = (np.ones(len(same), bool) if full_resync else ~same) & ~gone
            if not send.any():
                continue
            masks = empty_masks(checked.valid, m.output_columns)
            changed_rows = found & ~same & ~gone
            if changed_rows.any():
                at = np.flatnonzero(changed_rows)
                take = pa.array(at)
                changes.add(
                    checked.keys.take(take), key_hash[at], checked.valid.select(m.output_columns).take(take), masks[at]
                )
            every = bool(send.all())  # first runs and resyncs: no copy of what is sent whole
            pick = pa.array(np.flatnonzero(send))
            positions = pa.array(checked.positions[send])
            n_send = len(pick)
            manifest = pa.table(
                {
                    "line": pa.array(np.zeros(n_send, np.int64)),
                    "key": checked.keys if every else checked.keys.take(pick),
                    "key_hash": pa.array(key_hash if every else key_hash[send]),
                    "row_hash": pa.array(row_hash if every else row_hash[send]),
                    "updated_at": to_text(updated.take(positions)) if updated is not None
                    else pa.nulls(n_send, pa.string()),
                    "source_hash": pa.array(src_rest[checked.positions[send]]),
                    "empty_mask": pa.array(masks if every else masks[send]),
                }
            )
            data = checked.valid if every else checked.valid.take(pick)
            sizes = row_sizes if every else row_sizes[send]
            if m.partition_by:
                part = pc.cast(table_rest.column(m.partition_by).combine_chunks().take(positions), pa.string())
                for value in pc.unique(part).to_pylist():
                    sel = pc.equal(part, value) if value is not None else pc.is_null(part)
                    picked = _mask(sel)
                    big = writer.write(data.filter(sel), manifest.filter(sel), value, sizes[picked])
                    if big.any():
                        where = _Where(data.filter(sel), checked.positions[send][picked], table_rest, sizes[picked])
                        _reject_oversize(big, manifest.filter(sel), where, report, rejected, m, max_file_bytes)
            else:
                big = writer.write(data, manifest, sizes=sizes)
                if big.any():
                    where = _Where(data, checked.positions[send], table_rest, sizes)
                    _reject_oversize(big, manifest, where, report, rejected, m, max_file_bytes)
        files = writer.close()
        deleted_keys: list[str] = []
        if index is not None:
            unseen = index.unseen()
            report.deleted = len(unseen)
            if len(unseen) and not store._missing:
                deleted_keys = store.keys_for(obj, unseen.tolist(), limit=DELETED_SAMPLE)
        report.high_water = high
        report.files = len(files)
        report.bytes = sum(f.bytes for f in files)
        report.sent = sum(f.rows for f in files)
        rejected.flush()
        report.rejected_by_reason = rejected.reasons
        report.api_requests = import_requests(files)
        report.duration_s = round(time.perf_counter() - started, 3)
        if not dry_run and report.run_id is not None:
            store.finish_run(report.run_id, files=files, high_water=high, report=report.as_dict())
        changes.close()
        return SyncResult(
            report=report, files=files, deleted_keys=deleted_keys, rejected=rejected.sample, changes=changes
        )
    finally:
        store.close()


class _Rejects:
    """Rejected rows: counted by reason, stored in the state store a batch at a time (so memory does not
    grow with them), and the first :data:`REJECTED_SAMPLE` kept for the result."""

    def __init__(self, store: StateStore, obj: str, run_id: str | None, dry_run: bool) -> None:
        self.store, self.obj, self.run_id, self.dry_run = store, obj, run_id, dry_run
        self.reasons: dict[str, int] = {}
        self.sample: list[dict[str, Any]] = []
        self._batch: list[dict[str, Any]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            k = f"{r['field']}: {r['reason']}"
            self.reasons[k] = self.reasons.get(k, 0) + 1
        self.sample.extend(rows[: max(0, REJECTED_SAMPLE - len(self.sample))])
        if not self.dry_run:
            self._batch.extend(rows)
            if len(self._batch) >= 5000:
                self.flush()

    def append(self, row: dict[str, Any]) -> None:
        self.add([row])

    def flush(self) -> None:
        if self._batch and self.run_id is not None:
            self.store.record_rejected(self.obj, self.run_id, self._batch)
        self._batch = []


class _IndexedSeen:
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
class _Prepared:
    """One chunk, ready for validation: how many rows it had, the latest ``updated_at`` among them, the
    state-index positions of the rows whose source Connectif confirmed, and the other rows, shaped."""

    rows: int
    high: str | None
    known_at: np.ndarray  # positions in the state index of the rows unchanged by source hash
    src: np.ndarray  # source hash of each row of ``shaped``
    shaped: ShapedChunk | None  # the other rows, shaped (their source table is ``shaped.source``)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # rows set aside before shaping
    invalid: int = 0  # how many rows ``rejected`` names


def _high(table: pa.Table, mapping: Mapping) -> str | None:
    updated = _updated_values(table, mapping)
    if updated is None or updated.null_count == len(updated):
        return None
    top: str | None = to_text(pa.array([pc.max(updated).as_py()], updated.type))[0].as_py()  # the same order as text
    return top


def _prepare(
    table: pa.Table,
    mapping: Mapping,
    fingerprint: np.uint64,
    index: StateIndex | None,
    high: str | None = None,
    known_at: np.ndarray | None = None,
    rows: int | None = None,
) -> _Prepared:
    """Hash the source rows of ``table``, set aside those whose source hash ``index`` has (when given), shape
    the rest. ``high``, ``known_at`` and ``rows`` add what a probe already found (see :func:`_probe`).

    Values that are not UTF-8 are found first (:func:`_bad_text`): their rows are set aside, the others go on.
    """
    rows = table.num_rows if rows is None else rows
    table, rejected, invalid = _bad_text(table, mapping)
    src = as_signed(source_hashes(table, mapping, fingerprint))
    high = _max_text(high, _high(table, mapping))
    at_before = known_at if known_at is not None else np.zeros(0, np.int64)
    if index is None:
        shaped = shape(table, mapping) if table.num_rows else None
        return _Prepared(rows, high, at_before, src, shaped, rejected, invalid)
    known, at = index.find_sources(src)
    if not known.any():
        shaped = shape(table, mapping) if table.num_rows else None
        return _Prepared(rows, high, at_before, src, shaped, rejected, invalid)
    rest = table.filter(pa.array(~known))
    return _Prepared(
        rows,
        high,
        np.concatenate([at_before, at[known]]),
        src[~known],
        shape(rest, mapping) if rest.num_rows else None,
        rejected,
        invalid,
    )


def _bad_text(table: pa.Table, mapping: Mapping) -> tuple[pa.Table, list[dict[str, Any]], int]:
    """Set aside the rows holding a value that is not UTF-8 (:func:`~connectif_sync.shape.repair_utf8`).

    Such a value would make Connectif refuse the whole file (or crash the shaping), so its row is rejected
    with its key, source row, field and the bytes as found; a field declared ``on_invalid: empty`` is sent
    empty instead. Returns the other rows, the rejected entries and how many rows they are.
    """
    table, bad = repair_utf8(table, mapping.source_columns())
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
    out: list[dict[str, Any]] = []
    for mask, name, values in problems:
        for row, raw in zip(np.flatnonzero(mask).tolist(), values, strict=True):
            text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")  # bytes as found, visibly
            text = text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."
            i = where[row]
            key = keys[i] if keys[i] is not None else (text if name == mapping.key else None)
            out.append({"key": key, "source_ref": refs[i], "field": name, "reason": BAD_UTF8_REASON, "value": text})
    return table.filter(pa.array(~drop)), out, int(drop.sum())


def _max_text(a: str | None, b: str | None) -> str | None:
    return b if a is None else a if b is None else max(a, b)


PROBE_MIN_KNOWN = 0.5  # a probe is used when at least this share of the first range's rows is confirmed
PROBE_FULL_READ = 0.25  # a probed chunk with more unconfirmed rows than this share is read whole instead


def _probe(
    source_url: str, mapping: Mapping, index: StateIndex | None, fingerprint: np.uint64, chunk_rows: int,
    readers: int,
) -> Iterator[_Prepared] | None:  # fmt: skip
    """A full scan that reads most rows' source hash only: the chunks of a table keyed by an integer on
    PostgreSQL, MySQL or SQLite, or None where a probe does not apply (another database, no ``_sqlite_hash``
    extension, a SQL source, no integer key, an empty index) or does not pay (the first range mostly
    unconfirmed, e.g. confirmed by a version that hashed otherwise, or mostly REAL/BLOB values, which the
    SQLite hash leaves to the full read).

    Each range of the key is read as (key, ``updated_at``, source hash computed by the database:
    ``extract.source_hash_sql`` on PostgreSQL and MySQL, the ``_sqlite_hash`` extension on SQLite); the rows whose
    hash Connectif confirmed are done; the others are read in full by key (``IN``), hashed and shaped as in
    any other run, all in the reader threads. Reading three columns instead of every value is most of a
    second run's cost saved (bench/README.md). The hashes are those of the full read, so confirmed state
    written by either path serves both.
    """
    if index is None or len(index) == 0 or index.source_hashes is None:
        return None
    kind = arrow_source(source_url)
    sqlite = kind == "sqlite"
    if kind is None or (sqlite and sqlite_hash_extension() is None) or not mapping.order_by:
        return None
    ranges = integer_ranges(source_url, mapping, chunk_rows)
    if not ranges:
        return None
    dialect = sa.make_url(source_url).get_dialect()()
    fp = _signed(fingerprint)
    if not sqlite and source_hash_sql(mapping, dialect, fp) is None:
        return None
    index.prepare_sources()  # the look-up table, built once before the threads share the index
    key = mapping.order_by[0]

    def hashes_of(probe: pa.Table) -> np.ndarray:
        col = probe.column(PROBE_HASH_COLUMN)
        if not pa.types.is_integer(col.type):  # NULL all through a batch: typed null by the driver
            col = pc.cast(col, pa.int64())
        return np.asarray(pc.fill_null(col, 0).to_numpy(), dtype=np.int64)

    with arrow_connect(source_url, source_hash=sqlite) as conn:  # is it worth it? the first range tells
        first = read_table(conn, source_url, probe_query(mapping, dialect, fp, id_range=ranges[0]), chunk_rows,
                           resume_probe(mapping, dialect, fp, id_range=ranges[0]), mapping.order_by)  # fmt: skip
    if first.num_rows == 0 or index.find_sources(hashes_of(first))[0].mean() < PROBE_MIN_KNOWN:
        return None

    def transform(conn: Any, probe: pa.Table) -> _Prepared:
        """In a reader thread: the rows of one probed chunk that are not confirmed, read in full and shaped."""
        known, at = index.find_sources(hashes_of(probe))
        ids = probe.column(key)
        high = _high(probe, mapping)
        if probe.num_rows == 0:
            return _Prepared(0, None, np.zeros(0, np.int64), np.zeros(0, np.int64), None)
        if (~known).mean() > PROBE_FULL_READ:  # mostly unconfirmed: read the chunk's key range whole
            lo, hi = int(pc.min(ids).as_py()), int(pc.max(ids).as_py()) + 1
            full = read_rows(conn, source_url, mapping, dialect, chunk_rows, id_range=(lo, hi), source_hash=fp)
            return _prepare(full, mapping, fingerprint, index)
        wanted = ids.filter(pa.array(~known)).to_pylist()
        rest = read_rows(conn, source_url, mapping, dialect, chunk_rows, ids=wanted, source_hash=fp)
        # Rows read again count once: the probe's known ones plus whatever the second read returned (a row
        # deleted in between is simply not extracted, as with any read that is not one transaction).
        return _prepare(rest, mapping, fingerprint, index, high, at[known], int(known.sum()) + rest.num_rows)

    sqls = [probe_query(mapping, dialect, fp, id_range=r) for r in ranges]
    resumes = [resume_probe(mapping, dialect, fp, id_range=r) for r in ranges]
    return read_ranges(source_url, sqls, chunk_rows, readers, resumes, mapping.order_by, transform, source_hash=sqlite)


def mapping_fingerprint(mapping: Mapping) -> np.uint64:
    """A 64-bit value that changes whenever the mapping's output could (fields, types, options, key)."""
    text = repr((mapping.key, mapping.partition_by, sorted(mapping.fields.items())))
    return np.uint64(hash_strings(pa.array([text]))[0])


def _signed(fingerprint: np.uint64) -> int:
    return int(np.array([fingerprint], np.uint64).view(np.int64)[0])


def source_hashes(table: pa.Table, mapping: Mapping, fingerprint: np.uint64) -> np.ndarray:
    """A hash of each row's source values and of the mapping: equal hashes mean equal CSV output. The
    database's own (column ``PROBE_HASH_COLUMN``, see ``extract.source_hash_sql``) where the read has it."""
    if PROBE_HASH_COLUMN in table.column_names:
        col = table.column(PROBE_HASH_COLUMN)
        if not pa.types.is_integer(col.type):  # NULL all through a batch: typed null by the driver
            col = pc.cast(col, pa.int64())
        return np.asarray(pc.fill_null(col, 0).to_numpy(), dtype=np.int64).view(np.uint64)
    cols = [to_text(table.column(c)) for c in mapping.source_columns() if c != mapping.updated_at]
    h = hash_columns(cols)
    h ^= fingerprint
    return mix64(h)


SUPPRESSED_REASON = (
    "suppressed (erased at the contact's request): never sent again; remove the row from the source, "
    "or withdraw with `connectif-sync unsuppress`"
)


def _suppressed_row(key: str, ref: str | None, mapping: Mapping, why: str | None) -> dict[str, Any]:
    """The rejected-rows entry of a row whose key is suppressed (its suppression's reason as the value)."""
    return {"key": key, "source_ref": ref, "field": mapping.key, "reason": SUPPRESSED_REASON, "value": why}


def _mask(sel: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(sel, False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class _Where:
    """Where the rows given to the chunk writer come from: their output values, their positions in the
    source chunk, that chunk, and their CSV sizes (to say which row and field made a row too large)."""

    data: pa.Table
    positions: np.ndarray
    source: pa.Table
    sizes: np.ndarray


def _reject_oversize(
    mask: np.ndarray,
    manifest: pa.Table,
    where: _Where,
    report: SyncReport,
    rejected: _Rejects,
    mapping: Mapping,
    max_bytes: int,
) -> None:
    """Set aside rows too large for any file, naming their source row and their largest field."""
    if not mask.any():
        return
    rows = np.flatnonzero(mask)
    keys = manifest.column("key").take(pa.array(rows)).to_pylist()
    refs = source_refs(mapping, where.source, where.positions[rows])
    picked = where.data.take(pa.array(rows))
    names = list(picked.column_names)
    lengths = np.stack(
        [
            np.asarray(pc.fill_null(pc.binary_length(picked.column(c)), 0).to_numpy(zero_copy_only=False), np.int64)
            for c in names
        ],
        axis=1,
    )
    report.oversize += len(keys)
    for i, (k, ref) in enumerate(zip(keys, refs, strict=True)):
        largest = int(np.argmax(lengths[i]))
        rejected.append(
            {
                "key": k,
                "source_ref": ref,
                "field": names[largest],
                "reason": f"row larger than a whole import file may be ({max_bytes} bytes with the header): "
                "shorten this field in the source",
                "value": f"the row takes {int(where.sizes[rows[i]])} bytes in the CSV, this field "
                f"{int(lengths[i, largest])}",
            }
        )


def use_system_allocator() -> None:
    """Make pyarrow allocate with the C library's malloc (process-wide).

    Its default (mimalloc) keeps freed chunk buffers for reuse, which grows the peak by the size of
    several chunks; glibc's malloc hands them back between chunks. Measured on one million contacts: the
    same speed and about 20 MB less at the peak (bench/README.md).
    """
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


def iter_files(result: SyncResult) -> Iterator[dict[str, Any]]:
    """The files of a result as plain dicts (``path``, ``partition``, ``rows``, ``bytes``...) for XCom."""
    for f in result.files:
        yield f.as_dict()


def parse_when(value: str | datetime | None) -> datetime | None:
    """``YYYY-MM-DD[ HH:MM[:SS]]`` or ISO 8601 text (or a datetime) as a naive UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value
