"""The sync run of a bulk object, as a short loop of stages over one streaming pass:

extract (:mod:`~connectif_sync.extract`, or the :mod:`~connectif_sync.probe`) -> prepare (hash the source,
skip what Connectif confirmed, shape the rest: :mod:`~connectif_sync.prepare`) -> validate
(:mod:`~connectif_sync.validate`) -> change detection (:mod:`~connectif_sync.diff`) -> rejected rows
(:mod:`~connectif_sync.rejects`) -> chunk files (:mod:`~connectif_sync.chunk`) -> report
(:mod:`~connectif_sync.report`).

Memory stays bounded: one chunk of rows is in flight at a time, plus 8 bytes per distinct key (duplicate
detection) and, in a full scan, 17 bytes per confirmed key of the state (change and deletion detection).
Extraction runs in reader threads, preparing in a background thread (or in the reader threads, when the probe
reads the source), validation onwards in this one: Arrow, numpy, the database drivers and the C hash release
the GIL, so both cores work at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectif_sync import probe as probing
from connectif_sync.chunk import DEFAULT_MAX_FILE_BYTES, ChunkFile, ChunkWriter, keeps_updated
from connectif_sync.contract import REQUESTS_PER_MINUTE, RunMode
from connectif_sync.diff import (
    ChangeSet,
    IndexedSeen,
    Suppression,
    Verdict,
    classify,
    deleted_keys,
    mapping_fingerprint,
    signed,
    split_known,
)
from connectif_sync.extract import DEFAULT_CHUNK_ROWS, DEFAULT_READERS, WarmSource, extract_arrow, prefetch
from connectif_sync.hashing import as_signed, hash_csv_rows_and_masks, hash_strings
from connectif_sync.mappings import Mapping, check_source_columns, resolve_mapping
from connectif_sync.prepare import Prepared, later, prepare, updated_values
from connectif_sync.refresh import SourceHashRefresh
from connectif_sync.rejects import Rejects, duplicate_row, oversize_rows, suppressed_row
from connectif_sync.report import SyncReport, SyncResult
from connectif_sync.shape import to_text
from connectif_sync.store import StateIndex, StateStore
from connectif_sync.validate import Validated, source_refs, validate

__all__ = ["SyncParams", "run_sync", "sync", "use_system_allocator"]

DEFAULT_LOOKBACK = timedelta(hours=1)


@dataclass(frozen=True)
class SyncParams:
    """What a run is asked to do (the arguments of :func:`run_sync`, which documents them)."""

    obj: str
    source_url: str
    out_dir: str | Path | None
    state_url: str | None = None
    mapping: str | Path | Mapping | None = None
    full_resync: bool = False
    incremental: bool = False
    lookback: timedelta = DEFAULT_LOOKBACK
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    dry_run: bool = False
    run_id: str | None = None
    extract_path: str = "auto"
    readers: int | None = None  # None: DEFAULT_READERS for a full read, PROBE_READERS for a probe
    requests_per_minute: float = REQUESTS_PER_MINUTE

    @property
    def full_readers(self) -> int:
        """Connections that read the source whole (``readers``, else :data:`DEFAULT_READERS`)."""
        return self.readers or DEFAULT_READERS

    @property
    def probe_readers(self) -> int:
        """Connections that read a probe's pages (``readers``, else :data:`~connectif_sync.probe.PROBE_READERS`)."""
        return self.readers or probing.PROBE_READERS

    def check(self) -> None:
        if self.obj == "purchases":
            raise ValueError("purchases go through the API one by one: use connectif_sync.purchase_payloads()")
        if self.out_dir is None and not self.dry_run:
            raise ValueError("run_sync needs out_dir for the chunk files (or dry_run=True)")


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
    readers: int | None = None,
    requests_per_minute: float = REQUESTS_PER_MINUTE,
) -> SyncResult:
    """Sync one bulk object (contacts, products, coupons): write the CSV chunks of new and changed rows.

    * ``incremental``: extract only rows with ``updated_at`` at or after the store's watermark (minus
      ``lookback``); falls back to a full scan when there is no watermark yet. No deletion detection.
    * ``full_resync``: send every valid row, changed or not (state is still compared, for the report).
    * ``dry_run``: compute everything (files, bytes, requests) but write nothing anywhere.
    * ``readers``: connections that read a full scan of an integer-keyed table at once (ADBC sources); by
      default 2 (:data:`~connectif_sync.extract.DEFAULT_READERS`), and 3 for a second full scan's probe
      (:data:`~connectif_sync.probe.PROBE_READERS`).
    * ``requests_per_minute``: the connection's request budget, for the dry run's time estimate.

    Files are NOT committed to the state: call :meth:`StateStore.confirm_file` / ``confirm_import`` for
    each after Connectif imported it.
    """
    params = SyncParams(
        obj, source_url, out_dir, state_url=state_url, mapping=mapping, full_resync=full_resync,
        incremental=incremental, lookback=lookback, max_file_bytes=max_file_bytes, chunk_rows=chunk_rows,
        dry_run=dry_run, run_id=run_id, extract_path=extract_path, readers=readers,
        requests_per_minute=requests_per_minute,
    )  # fmt: skip
    return sync(params)


def sync(params: SyncParams) -> SyncResult:
    """:func:`run_sync` with its arguments as one object: the stages, chunk by chunk."""
    with old_objects_frozen():
        return _sync(params)


def _sync(params: SyncParams) -> SyncResult:
    started = time.perf_counter()
    params.check()
    use_system_allocator()
    with WarmSource(params.source_url) as warm:
        return _stages(params, warm, started)


def _stages(params: SyncParams, warm: WarmSource, started: float) -> SyncResult:
    """The run once its source is being connected: the mapping checked, the store opened, the chunks."""
    mapping = resolve_mapping(params.obj, params.mapping)
    mapping = check_source_columns(mapping, params.source_url)  # with its columns' kinds: see source_hash_sql
    store = StateStore(params.state_url, readonly=params.dry_run)
    run: _Run | None = None
    try:
        run = _begin(params, mapping, store)
        for prepared in _prepared_chunks(run):
            warm.close()  # the run's readers are connected
            _count_prepared(run, prepared)
            if len(prepared.known_at):
                _take_known(run, prepared.known_at)
            if prepared.shaped is not None:
                _take_shaped(run, prepared)
        return _finish(run, started)
    finally:
        if run is not None and run.confirmed is not None:
            run.confirmed.exception()  # its read ends before the store closes
        if run is not None and run.refresh is not None:
            run.refresh.discard()  # a run that failed stores none of it
        if run is not None and run.early is not None:
            run.early.close()  # its readers stopped, if a failure came before the chunks were read
        if run is not None:  # their writes end before the store closes (a run that failed: files left as they are)
            run.rejects.stop()
            run.writer.stop()
        store.close()


@dataclass
class _Run:
    """One run's state, shared by the stages."""

    params: SyncParams
    mapping: Mapping
    store: StateStore
    report: SyncReport
    since: datetime | None
    index: StateIndex | None  # the confirmed state, loaded whole for a full scan
    confirmed: Future[StateIndex | None] | None  # incremental runs: the state's look-up table, read meanwhile
    early: probing.Started | None  # full scans: the probe's pages, started before the index was loaded
    refresh: SourceHashRefresh | None  # full scans: unchanged rows whose stored source hash is not theirs
    writer: ChunkWriter
    seen: IndexedSeen
    rejects: Rejects
    suppression: Suppression
    changes: ChangeSet
    fingerprint: np.uint64
    high: str | None = None
    deleted_sample: list[str] = field(default_factory=list)

    @property
    def skip_known(self) -> bool:
        """Whether rows whose source Connectif confirmed are skipped before shaping (full scans, not resyncs)."""
        return self.index is not None and len(self.index) > 0 and not self.params.full_resync


def _begin(p: SyncParams, mapping: Mapping, store: StateStore) -> _Run:
    """Open the run: the watermark, the mode, the run's row in the store, the state index, the writer."""
    since = store.next_since(p.obj, p.lookback) if p.incremental and mapping.updated_at else None
    mode = (
        RunMode.PLAN
        if p.dry_run
        else RunMode.FULL_RESYNC
        if p.full_resync
        else RunMode.INCREMENTAL
        if since
        else RunMode.FULL
    )
    report = SyncReport(object=p.obj, mode=mode, since=since.isoformat(sep=" ") if since else None)
    if not p.dry_run:
        report.run_id = store.begin_run(p.obj, mode.value, since, p.run_id)
    fingerprint = mapping_fingerprint(mapping)
    early = _early_probe(p, mapping, store, fingerprint) if since is None else None
    try:
        return _open_run(p, mapping, store, report, since, early, fingerprint)
    except BaseException:
        if early is not None:
            early.close()
        raise


def _open_run(
    p: SyncParams, mapping: Mapping, store: StateStore, report: SyncReport, since: datetime | None,
    early: probing.Started | None, fingerprint: np.uint64,
) -> _Run:  # fmt: skip
    """The run's stages, once it began: the state index (full scans) and what writes and counts."""
    index = store.load_index(p.obj) if since is None else None
    confirmed = None
    if index is None:  # an incremental run: its look-up table is read while the first rows are (see _lookup)
        pool = ThreadPoolExecutor(1, thread_name_prefix="connectif-sync-state")
        confirmed = pool.submit(store.lookup_index, p.obj)
        pool.shutdown(wait=False)  # its one thread ends with the read
    return _Run(
        params=p,
        mapping=mapping,
        store=store,
        report=report,
        since=since,
        index=index,
        confirmed=confirmed,
        early=early,
        refresh=SourceHashRefresh(p.out_dir, p.obj, list(mapping.output_columns))
        if p.out_dir is not None and index is not None and len(index) and not (p.dry_run or p.full_resync)
        else None,
        writer=ChunkWriter(p.out_dir, p.obj, mapping.output_columns, max_bytes=p.max_file_bytes, dry_run=p.dry_run),
        seen=IndexedSeen(index),
        rejects=Rejects(store, p.obj, report.run_id, dry_run=p.dry_run),
        suppression=Suppression.of(store, p.obj),
        changes=ChangeSet(list(mapping.output_columns)),
        fingerprint=fingerprint,
    )


def _early_probe(p: SyncParams, mapping: Mapping, store: StateStore, fingerprint: np.uint64) -> probing.Started | None:
    """A full scan's probe pages, started before the confirmed state is loaded when there is one to compare
    with (a first run starts none): the database reads them meanwhile (bench/README.md, session 11)."""
    if p.full_resync or not store.has_confirmed(p.obj):
        return None
    return probing.start(p.source_url, mapping, fingerprint, p.chunk_rows, p.probe_readers)


def _prepared_chunks(run: _Run) -> Iterator[Prepared]:
    """Extract: the probe where it applies and pays, else the source read whole and prepared in a background
    thread."""
    p, m = run.params, run.mapping
    if run.skip_known:
        probed = probing.probe(p.source_url, m, run.index, run.fingerprint, p.chunk_rows, p.probe_readers, run.early)
        if probed is not None:
            return probed
    if run.early is not None:
        run.early.close()  # not used: its readers stop before the full read starts
    index = run.index if run.skip_known else None
    chunks = extract_arrow(
        p.source_url,
        m,
        since=run.since,
        chunk_rows=p.chunk_rows,
        path=p.extract_path,
        readers=p.full_readers,
        source_hash=signed(run.fingerprint),
    )
    return prefetch(prepare(t, m, run.fingerprint, index) for t in chunks)


def _count_prepared(run: _Run, prepared: Prepared) -> None:
    run.report.extracted += prepared.rows
    if prepared.rejected:  # values that are not UTF-8: set aside before hashing and shaping
        run.report.invalid += prepared.invalid
        run.rejects.add(prepared.rejected)
    run.high = later(run.high, prepared.high)


def _take_known(run: _Run, at: np.ndarray) -> None:
    """Rows whose source is exactly what Connectif confirmed: unchanged, unless suppressed since or a repeat
    of a key kept earlier (their keys count for the duplicate rule before the chunk's other rows)."""
    assert run.index is not None
    known = split_known(at, run.index, run.seen, run.suppression)
    report, store, obj = run.report, run.store, run.params.obj
    if known.gone.any():  # confirmed before the key was suppressed: set aside now
        report.suppressed += int(known.gone.sum())
        names = store.keys_for(obj, run.index.key_hashes[at][known.gone].tolist())
        hashes = as_signed(hash_strings(pa.array(names, pa.string()))).tolist()
        run.rejects.add(
            suppressed_row(k, None, run.mapping, run.suppression.why(h)) for k, h in zip(names, hashes, strict=True)
        )
    report.unchanged += known.unchanged
    if known.duplicate.any():
        report.duplicate += int(known.duplicate.sum())
        names = store.keys_for(obj, run.index.key_hashes[at][known.duplicate].tolist())
        run.rejects.add(duplicate_row(k, run.mapping) for k in names)


def _take_shaped(run: _Run, prepared: Prepared) -> None:
    """Validate the shaped rows, compare them with the confirmed state, write those to send."""
    assert prepared.shaped is not None and prepared.shaped.source is not None
    m, report = run.mapping, run.report
    checked = validate(prepared.shaped, m, run.seen)
    report.invalid += checked.invalid_rows
    report.duplicate += checked.duplicate_rows
    run.rejects.add(checked.rejected)
    if checked.valid.num_rows == 0:
        return
    row_hash_u, row_sizes, masks = hash_csv_rows_and_masks([checked.valid.column(c) for c in m.output_columns])
    row_hash, key_hash = as_signed(row_hash_u), as_signed(checked.key_hashes)
    found, confirmed = _lookup(run, key_hash)
    verdict = classify(row_hash, found, confirmed, run.suppression.mask(key_hash))
    _count_verdict(run, verdict, checked, key_hash, prepared.shaped.source)
    if run.refresh is not None and run.index is not None:
        run.refresh.add(run.index, checked.keys, checked.valid, verdict.unchanged, key_hash, row_hash,
                        prepared.src[checked.positions])  # fmt: skip
    send = verdict.to_send(full_resync=run.params.full_resync)
    if not send.any():
        return
    if verdict.changed.any():
        at = pa.array(np.flatnonzero(verdict.changed))
        changed = np.flatnonzero(verdict.changed)
        run.changes.add(
            checked.keys.take(at), key_hash[changed], checked.valid.select(m.output_columns).take(at), masks[changed]
        )
    outgoing = _Outgoing.of(run, checked, send, prepared, key_hash, row_hash, row_sizes, masks)
    _write(run, outgoing)


def _lookup(run: _Run, key_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(found, confirmed row hash)`` of each key: from the full scan's index, else the incremental run's
    look-up table, else the store, chunk by chunk."""
    if run.index is not None:
        return run.index.lookup(key_hash)
    table = run.confirmed.result() if run.confirmed is not None else None
    if table is not None:
        return table.lookup(key_hash)
    return run.store.lookup(run.params.obj, key_hash)


def _count_verdict(run: _Run, verdict: Verdict, checked: Validated, key_hash: np.ndarray, source: pa.Table) -> None:
    """Count new, changed and unchanged rows; set the suppressed ones aside with their source rows."""
    report = run.report
    if verdict.gone.any():
        report.suppressed += int(verdict.gone.sum())
        rows = np.flatnonzero(verdict.gone)
        refs = source_refs(run.mapping, source, checked.positions[rows])
        keys = checked.keys.take(pa.array(rows)).to_pylist()
        run.rejects.add(
            suppressed_row(k, ref, run.mapping, run.suppression.why(h))
            for k, ref, h in zip(keys, refs, key_hash[rows].tolist(), strict=True)
        )
    report.new += int(verdict.new.sum())
    report.changed += int(verdict.changed.sum())
    report.unchanged += int(verdict.unchanged.sum())


@dataclass
class _Outgoing:
    """The rows of one chunk to send: their output values, their manifest rows (what the state store commits
    once Connectif confirms the file), their CSV sizes, and their positions in the source chunk ``source``
    (to name the source row of one too large for any file)."""

    data: pa.Table
    manifest: pa.Table
    sizes: np.ndarray
    positions: np.ndarray
    source: pa.Table

    @classmethod
    def of(
        cls, run: _Run, checked: Validated, send: np.ndarray, prepared: Prepared, key_hash: np.ndarray,
        row_hash: np.ndarray, row_sizes: np.ndarray, masks: np.ndarray,
    ) -> _Outgoing:  # fmt: skip
        source = prepared.shaped.source if prepared.shaped is not None else None
        assert source is not None
        every = bool(send.all())  # first runs and resyncs: no copy of what is sent whole
        pick = pa.array(np.flatnonzero(send))
        positions = checked.positions[send]
        updated = updated_values(source, run.mapping)
        manifest = pa.table(
            {
                "line": pa.array(np.zeros(len(pick), np.int64)),
                "key": checked.keys if every else checked.keys.take(pick),
                "key_hash": pa.array(key_hash if every else key_hash[send]),
                "row_hash": pa.array(row_hash if every else row_hash[send]),
                "updated_at": _manifest_updated(updated.take(pa.array(positions))) if updated is not None
                else pa.nulls(len(pick), pa.string()),
                "source_hash": pa.array(prepared.src[positions]),
                "empty_mask": pa.array(masks if every else masks[send]),
            }
        )  # fmt: skip
        data = checked.valid if every else checked.valid.take(pick)
        return cls(data, manifest, row_sizes if every else row_sizes[send], positions, source)

    def select(self, sel: pa.Array) -> _Outgoing:
        rows = np.asarray(pc.fill_null(sel, False).to_numpy(zero_copy_only=False), dtype=bool)
        return _Outgoing(
            self.data.filter(sel), self.manifest.filter(sel), self.sizes[rows], self.positions[rows], self.source
        )


def _manifest_updated(values: pa.Array) -> pa.Array:
    """``updated_at`` as a manifest keeps it: a naive timestamp as is (:mod:`connectif_sync.chunk`), else text."""
    return values if keeps_updated(values.type) else to_text(values)


def _write(run: _Run, out: _Outgoing) -> None:
    """Chunk files: one series per partition (coupon set) where the mapping has one."""
    if not run.mapping.partition_by:
        _write_part(run, out, None)
        return
    column = out.source.column(run.mapping.partition_by).combine_chunks()
    part = pc.cast(column.take(pa.array(out.positions)), pa.string())
    for value in pc.unique(part).to_pylist():
        _write_part(run, out.select(pc.equal(part, value) if value is not None else pc.is_null(part)), value)


def _write_part(run: _Run, out: _Outgoing, partition: str | None) -> None:
    """Write rows to the files of one partition; set aside those too large for any file."""
    big = run.writer.write(out.data, out.manifest, partition, out.sizes)
    if not big.any():
        return
    refs = source_refs(run.mapping, out.source, out.positions[np.flatnonzero(big)])
    rows = oversize_rows(big, out.manifest.column("key"), out.data, refs, out.sizes, run.params.max_file_bytes)
    run.report.oversize += len(rows)
    run.rejects.add(rows)


def _finish(run: _Run, started: float) -> SyncResult:
    """Close the files, count deletions, complete the report and record the run in the store."""
    files: list[ChunkFile] = run.writer.close()
    report = run.report
    report.deleted, deleted = deleted_keys(run.index, run.store, run.params.obj)
    report.high_water = run.high
    run.rejects.finish()
    report.refreshed = run.refresh.apply(run.store) if run.refresh is not None else 0
    report.finish(files, run.rejects.reasons, time.perf_counter() - started, run.params.requests_per_minute)
    if not run.params.dry_run and report.run_id is not None:
        run.store.finish_run(report.run_id, files=files, high_water=run.high, report=report.as_dict())
    run.changes.close()
    return SyncResult(
        report=report, files=files, deleted_keys=deleted, rejected=run.rejects.sample, changes=run.changes
    )


@contextlib.contextmanager
def old_objects_frozen() -> Iterator[None]:
    """Keep the objects that exist before a run out of the garbage collector's full collections during it.

    A run allocates enough to set off a full collection, which walks every object of the process (the
    imported modules of pandas, SQLAlchemy, Airflow: about 100,000) while holding the GIL, so the reader and
    preparing threads wait too: 0.04-0.09 s of a half-second SQLite full scan, once in every run
    (bench/README.md, session 10). ``gc.freeze`` moves those objects aside and ``gc.unfreeze`` gives them back
    at the end, so nothing is kept from collection after the run; the run's own objects are collected as
    usual. A process that froze objects itself (a server that forks), or that turned the collector off, is
    left as it is."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def use_system_allocator() -> None:
    """Make pyarrow allocate with the C library's malloc (process-wide).

    Its default (mimalloc) keeps freed chunk buffers for reuse, which grows the peak by the size of
    several chunks; glibc's malloc hands them back between chunks. Measured on one million contacts: the
    same speed and about 20 MB less at the peak (bench/README.md).
    """
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
    _limit_malloc_arenas()


_M_ARENA_MAX = -8  # glibc's <malloc.h>


@functools.cache
def _limit_malloc_arenas() -> None:
    """At most two glibc malloc arenas in this process (from now on).

    glibc gives each thread that allocates at once an arena of its own (up to 8 per core), and keeps the
    chunks freed in each: with reader threads that materialise their results (ConnectorX on MySQL), that
    added about 30 MB at the peak of a million-row run (310 against 278 MB; PostgreSQL and SQLite 5-8 MB),
    for no measurable speed. Elsewhere than glibc (musl, macOS) there is nothing to tune.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, 2)
