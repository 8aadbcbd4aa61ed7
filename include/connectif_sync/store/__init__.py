"""The state store: what Connectif has confirmed, per object and key, and everything a run must remember.

One facade, :class:`StateStore`, over a SQL database (a SQLite file by default, PostgreSQL in deployments),
split by job so that each can be read on its own:

- :mod:`~connectif_sync.store.schema`: the tables (names are persisted identifiers) and in-place migration;
- :mod:`~connectif_sync.store.index`: the diff index, the confirmed hashes a run compares rows with;
- :mod:`~connectif_sync.store.ledger`: the commit ledger, files written and rows confirmed (the only writer
  of the confirmed state), appended as blocks (:mod:`~connectif_sync.store.blocks`);
- :mod:`~connectif_sync.store.runs`: library runs (watermarks) and the Airflow runs' summaries;
- :mod:`~connectif_sync.store.rejected`: rows set aside by validation or by Connectif;
- :mod:`~connectif_sync.store.suppression`, :mod:`~connectif_sync.store.uploads`,
  :mod:`~connectif_sync.store.purchases`, :mod:`~connectif_sync.store.erasures`,
  :mod:`~connectif_sync.store.alerts`: one small job each.

``connectif_sync.state`` (the path before this package) re-exports the same names.
"""

from __future__ import annotations

from connectif_sync.store.alerts import AlertStates
from connectif_sync.store.base import StoreBase
from connectif_sync.store.erasures import ERASURE_OUTCOMES, ErasureLog
from connectif_sync.store.index import IndexReads, StateIndex
from connectif_sync.store.ledger import Ledger, csv_rows
from connectif_sync.store.purchases import PURCHASE_DONE, PurchaseLog
from connectif_sync.store.rejected import KEEP_REJECTED_RUNS, RejectedRows
from connectif_sync.store.runs import RunHistoryEntry, RunLog
from connectif_sync.store.schema import (
    DEFAULT_STATE_URL,
    REJECTED_BROWSE_INDEXES,
    alerts_table,
    erasures_table,
    files_table,
    metadata,
    parse_ts,
    pending_table,
    purchases_table,
    rejected_table,
    run_history_table,
    runs_table,
    snapshots_table,
    state_blocks_table,
    state_table,
    suppressed_table,
    uploads_table,
)
from connectif_sync.store.suppression import Suppression
from connectif_sync.store.uploads import KEEP_UPLOADS, Uploads, file_digest


class StateStore(Ledger, IndexReads, RunLog, RejectedRows, Suppression, Uploads, AlertStates, PurchaseLog, ErasureLog):
    """Per-object sync state in a SQL database: every job of the store behind one object.

    ``StateStore(url, readonly=False)``: ``url`` is a SQLAlchemy URL (default :data:`DEFAULT_STATE_URL`);
    ``readonly=True`` never creates or changes anything (dry runs): a missing store reads as empty.
    """

    def __enter__(self) -> StateStore:
        return self


__all__ = [
    "DEFAULT_STATE_URL",
    "ERASURE_OUTCOMES",
    "KEEP_REJECTED_RUNS",
    "KEEP_UPLOADS",
    "PURCHASE_DONE",
    "REJECTED_BROWSE_INDEXES",
    "RunHistoryEntry",
    "StateIndex",
    "StateStore",
    "StoreBase",
    "alerts_table",
    "csv_rows",
    "erasures_table",
    "file_digest",
    "files_table",
    "metadata",
    "parse_ts",
    "pending_table",
    "purchases_table",
    "rejected_table",
    "run_history_table",
    "runs_table",
    "snapshots_table",
    "state_blocks_table",
    "state_table",
    "suppressed_table",
    "uploads_table",
]
