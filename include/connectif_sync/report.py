"""What a bulk run reports: :class:`SyncReport` (counts per stage) and :class:`SyncResult` (the report, the
files to import, samples of deleted keys and rejected rows, the changes the guardrail looks at).

The DAGs log the report, push it to XCom and store it in the run history; the Airflow-side summary of a whole
DAG run is :class:`~connectif_sync.contract.RunSummary`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from connectif_sync.chunk import ChunkFile
from connectif_sync.contract import IMPORT_QUEUE, REQUESTS_PER_MINUTE, RunMode
from connectif_sync.diff import ChangeSet


@dataclass
class SyncReport:
    """Counts per stage of one run; ``as_dict()`` is JSON-serialisable (DAGs log it and push it to XCom)."""

    object: str
    run_id: str | None = None
    mode: RunMode = RunMode.FULL
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
    refreshed: int = 0  # unchanged rows whose new source hash was stored (full scans: see connectif_sync.refresh)
    files: int = 0
    bytes: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    api_requests: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mode"] = str(self.mode)  # the plain text value: XCom and the run history store it as before
        return out

    def finish(
        self,
        files: list[ChunkFile],
        rejected_by_reason: dict[str, int],
        duration_s: float,
        per_minute: float = REQUESTS_PER_MINUTE,
    ) -> None:
        """Fill in what the written files and the rejected rows say, once the run has read everything
        (``per_minute``: the connection's request budget, for the estimate)."""
        self.files = len(files)
        self.bytes = sum(f.bytes for f in files)
        self.sent = sum(f.rows for f in files)
        self.rejected_by_reason = rejected_by_reason
        self.api_requests = import_requests(files, per_minute)
        self.duration_s = round(duration_s, 3)


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


def import_requests(files: list[ChunkFile], per_minute: float = REQUESTS_PER_MINUTE) -> dict[str, Any]:
    """The API requests the imports of ``files`` need at least: create, one status poll, and the error
    report when there are errors; and how they fit the account's queue (10 imports at a time) and the
    connection's budget (``per_minute``, its ``rate_limit_per_minute``)."""
    n = len(files)
    return {
        "imports": n,
        "min_requests": 2 * n,
        "max_requests_if_every_import_has_errors": 3 * n,
        "queue_waves": -(-n // IMPORT_QUEUE) if n else 0,
        "min_minutes_at_rate_limit": round(2 * n / per_minute, 2),
        "rate_limit_per_minute": per_minute,
    }
