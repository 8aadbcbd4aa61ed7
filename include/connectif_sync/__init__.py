"""Airflow-free sync library: mappings, extraction, shaping, validation, change detection, chunking.

Public API (stable; everything else is internal). Import from ``connectif_sync``.

Bulk objects (contacts, products, coupons)::

    run_sync(obj, source_url, out_dir, *, state_url=None, mapping=None, full_resync=False,
             incremental=False, lookback=timedelta(hours=1), max_file_bytes=DEFAULT_MAX_FILE_BYTES,
             chunk_rows=32_768, dry_run=False, run_id=None, extract_path="auto", readers=2) -> SyncResult
        Extract -> shape -> validate -> detect changes -> write chunk CSVs of the new and changed rows
        into out_dir (``<obj>-0001.csv``...; coupons ``coupons-<couponSetId>-0001.csv``), each with a
        ``.csv.manifest`` beside it. Rejected rows go to the state store's rejected table. Nothing is
        committed as confirmed: call StateStore.confirm_import / confirm_file per imported file.
        ``incremental=True`` uses the updated_at watermark (with ``lookback``); deletions are only
        detected by full scans. ``dry_run=True`` writes nothing anywhere (files, state).
    sync(SyncParams(obj, source_url, out_dir, **same keyword arguments)) -> SyncResult   # the same, one object
    plan_sync(obj, source_url, **same keyword arguments) -> SyncReport       # dry run

    SyncResult: .report (SyncReport), .files (list[ChunkFile]), .deleted_keys (list[str], first 1000),
                .rejected (list[dict], first 1000; all are in the state store), .as_dict() -> JSON dict
    RejectedRow (contract.py): .key, .source_ref, .field, .reason, .value, .as_dict() -> the dicts above
    ChunkFile:  .path, .manifest, .object, .rows, .bytes, .partition (coupon set id or None),
                .min_updated_at, .max_updated_at, .as_dict()
    SyncReport: .object, .run_id, .mode (RunMode: full | incremental | full_resync | plan | window), .since,
                .high_water, .extracted, .invalid, .duplicate, .oversize, .unchanged, .new, .changed,
                .deleted, .suppressed, .sent, .refreshed (source hashes stored by a full scan), .files, .bytes,
                .rejected_by_reason {"field: reason": n}, .api_requests {...}, .duration_s, .as_dict()

State store (SQLAlchemy URL; default ``sqlite:///connectif_sync_state.db``, PostgreSQL in deployments)::

    store = StateStore(state_url=None, *, readonly=False)       # also a context manager; .close()
    store.confirm_import(result) -> {"object", "path", "confirmed", "failed"}
        ``result`` = the Connectif import operator's return value {"import_id", "status", "total",
        "success", "errors", "rejected_rows": [{"line", "field", "error"}], "file_path"}: commits every row
        of file_path except the rejected lines (they stay pending, go again next run, and are listed by
        store.pending()). Raises ValueError if status != "finished" (then nothing is committed). An answer
        that does not prove which rows arrived ("report_complete": false, fewer report lines than "errors",
        a "total" other than the file's rows) commits nothing: {"object", "path", "confirmed": 0, "failed": 0,
        "unconfirmed": rows, "reason"}, and the file stays pending.
    store.confirm_file(csv_path, failed_lines: Iterable[int] | Mapping[int, str] = ()) -> same dict
    store.record_upload(csv_path, *, started_at, rows=None, import_id=None)   # before and after an upload
    store.earlier_upload(csv_path) -> {"path", "import_id", "started_at", "rows"} | None   # safe re-attach
    store.claimed_imports() -> set[str]; store.uploads(obj=None) -> list[dict]
        (the import operator's ``upload_ledger``: no second import of the same rows across tries and runs)
    store.rejected(obj=None, run_id=None, limit=1000) -> list[dict]   # validation rejects, latest run
    store.iter_rejected(obj=None, run_id=None) -> Iterator[dict]; store.count_rejected(obj=None, run_id=None)
    store.suppress(obj, keys, reason) / unsuppress(obj, keys) / suppressed(obj=None)  # never sent again
        rows: {"run_id", "object", "key", "source_ref", "field", "reason", "value"}
    store.pending(obj=None) -> list[dict]        # rows Connectif rejected: {"object","key","line","reason",...}
    store.runs(obj=None, limit=20) -> list[dict] # run history with their JSON reports
    store.files(obj=None, status=None) -> list[dict]   # chunk files: pending | confirmed | superseded
    store.purchases_done(ids) -> set[str]        # ids Connectif already has
    store.record_purchase(purchase_id, status, detail=None)   # status: confirmed | duplicate | failed

Purchases (one API request each; no files)::

    batch = purchase_payloads(source_url, start=None, end=None, *, mapping=None, state_url=None,
                              chunk_rows=32_768, dry_run=False, include_done=False) -> PurchaseBatch
    for payload in batch: ...   # dicts ready for POST /purchases/ (purchaseId, contactEmail,
                                # purchaseDate, cartId, paymentMethod, totalPrice, totalQuantity,
                                # products[{productId, name, productDetailUrl, unitPrice, quantity,
                                # price, ...}]); orders dated in [start, end); purchases already
                                # confirmed in the state store are skipped
    batch.report (SyncReport, complete once iterated), batch.rejected (list[dict])
    plan_purchases(source_url, start=None, end=None, **kwargs) -> SyncReport

Mappings and building blocks::

    load_mapping(path) -> Mapping; resolve_mapping(obj, path_or_mapping_or_None) -> Mapping
    MappingError (ValueError; .problems: list[str] naming file, entry and fix); MAPPINGS_DIR
    extract(source_url, mapping, *, since=None, window=None, chunk_rows=32_768, readers=2) -> Iterator[DataFrame]
    shape(table, mapping) -> ShapedChunk;  validate(shaped, mapping, KeySet()) -> Validated
    ChunkWriter(out_dir, obj, columns, max_bytes=...) ; DEFAULT_MAX_FILE_BYTES (just under 50 MB)
    sqlite_hash_extension() -> str | None   # path of the built SQLite source-hash extension, or None

The sample ERP the demo, the tests and the benchmarks read is test data, not part of this library: the
top-level package :mod:`sample_erp` (``connectif-sync sample-erp`` fills one).

Command line: ``connectif-sync`` / ``python -m connectif_sync`` (see :mod:`connectif_sync.cli`).
"""

from __future__ import annotations

from connectif_sync.chunk import DEFAULT_MAX_FILE_BYTES, ChunkFile, ChunkWriter
from connectif_sync.contract import RejectedRow, RunMode
from connectif_sync.extract import Window, extract, extract_arrow, sqlite_hash_extension
from connectif_sync.mappings import MAPPINGS_DIR, Mapping, MappingError, load_mapping, resolve_mapping
from connectif_sync.pipeline import SyncParams, run_sync, sync
from connectif_sync.planning import plan_sync
from connectif_sync.purchases import PurchaseBatch, plan_purchases, purchase_payloads
from connectif_sync.report import SyncReport, SyncResult
from connectif_sync.shape import ShapedChunk, shape
from connectif_sync.store import DEFAULT_STATE_URL, StateStore
from connectif_sync.validate import KeySet, Validated, validate

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_STATE_URL",
    "MAPPINGS_DIR",
    "ChunkFile",
    "ChunkWriter",
    "KeySet",
    "Mapping",
    "MappingError",
    "PurchaseBatch",
    "RejectedRow",
    "RunMode",
    "ShapedChunk",
    "StateStore",
    "SyncParams",
    "SyncReport",
    "SyncResult",
    "Validated",
    "Window",
    "extract",
    "extract_arrow",
    "load_mapping",
    "plan_purchases",
    "plan_sync",
    "purchase_payloads",
    "resolve_mapping",
    "run_sync",
    "shape",
    "sqlite_hash_extension",
    "sync",
    "validate",
]
