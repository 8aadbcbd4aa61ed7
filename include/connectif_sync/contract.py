"""The typed records the DAGs, the state store and the monitoring pages share: one run's summary and its imports.

Why typed: each DAG's ``report`` task used to build its summary as a hand-written dict, so the pages, the run
history and the alerts would each have had to guess which keys a given DAG wrote. :class:`RunSummary` names
every count once; :meth:`RunSummary.as_dict` keeps the ``summary`` XCom exactly as before (same keys, object-
specific ones at the top level), and :meth:`RunSummary.from_dict` reads old and new summaries alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Rows of an import's error report kept in the run history (the state store's ``pending`` table has them all).
MAX_IMPORT_REJECTS_KEPT = 200
#: Imports Connectif queues per account at once (the API contract); a dry run's estimate counts waves of them.
IMPORT_QUEUE = 10
#: API requests per minute the provider's shared budget defaults to (the account's limit is 100/min).
REQUESTS_PER_MINUTE = 90


class SyncObject(StrEnum):
    """What a Connectif DAG syncs; the value is the ``object`` of its summary and ``connectif_<value>`` its DAG."""

    CONTACTS = "contacts"
    PRODUCTS = "products"
    PURCHASES = "purchases"
    COUPONS = "coupons"
    CONTACT_ERASURE = "contact_erasure"
    EXPORTS = "exports"

    @property
    def dag_id(self) -> str:
        return f"connectif_{self.value}"

    @property
    def store_object(self) -> str:
        """The object name the state store files this object's rejected and pending rows under."""
        return "erasure" if self is SyncObject.CONTACT_ERASURE else self.value

    @property
    def label(self) -> str:
        return {SyncObject.CONTACT_ERASURE: "erasure"}.get(self, self.value)

    @classmethod
    def from_dag_id(cls, dag_id: str) -> SyncObject | None:
        """The object a ``connectif_*`` DAG syncs, or None for any other DAG."""
        if not dag_id.startswith("connectif_"):
            return None
        try:
            return cls(dag_id.removeprefix("connectif_"))
        except ValueError:
            return None


class RunMode(StrEnum):
    """How a library run read its source; stored as the ``mode`` of the state store's ``runs`` table."""

    FULL = "full"  # every row read, compared with the confirmed state; deletions detected
    INCREMENTAL = "incremental"  # only rows updated since the watermark (minus the look-back)
    FULL_RESYNC = "full_resync"  # every valid row sent, changed or not
    PLAN = "plan"  # a dry run: nothing written anywhere (the watermark ignores these runs)
    WINDOW = "window"  # purchases: the orders dated in a window


class FileStatus(StrEnum):
    """A chunk file in the state store's ``files`` table."""

    PENDING = "pending"  # written, not confirmed yet: its rows go again if a later run supersedes it
    CONFIRMED = "confirmed"  # Connectif imported it; its rows (but the failed lines) are the confirmed state
    SUPERSEDED = "superseded"  # a later run re-extracted its rows before it was confirmed


class UploadStatus(StrEnum):
    """An upload in the state store's ``uploads`` ledger (no second import of the same rows)."""

    UPLOADING = "uploading"  # the request went out; no import id is known yet
    IMPORTED = "imported"  # Connectif gave it an import id
    CONFIRMED = "confirmed"  # its rows were confirmed into the state


class PurchaseStatus(StrEnum):
    """What sending one purchase ended in (the state store's ``purchases`` table)."""

    CONFIRMED = "confirmed"  # Connectif accepted it
    DUPLICATE = "duplicate"  # Connectif already had it
    FAILED = "failed"  # kept: sent again next run

    @property
    def done(self) -> bool:
        """Whether Connectif has it, so that it is never sent again."""
        return self is not PurchaseStatus.FAILED


class RunState(StrEnum):
    """How a sync run ended, as its ``report`` task judged it (the Airflow run state is kept apart)."""

    SUCCESS = "success"  # every import finished; rows Connectif rejected are pending, not lost
    INCOMPLETE = "incomplete"  # some imports did not finish: their rows go again next run
    PLANNED = "planned"  # a dry run: nothing was sent
    FAILED = "failed"  # the run failed before it could report counts


@dataclass
class ImportOutcome:
    """One import of a run: what Connectif said about it, and the first rows it rejected."""

    import_id: str
    status: str
    total: int = 0
    success: int = 0
    errors: int = 0
    duration_s: float | None = None
    file_path: str | None = None
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)  # [{"line", "field", "error", "key"?}]

    @classmethod
    def from_operator(cls, summary: dict[str, Any]) -> ImportOutcome:
        """From the dict ``ConnectifImportOperator`` returns (extra keys are ignored)."""
        rows = list(summary.get("rejected_rows") or [])
        return cls(
            import_id=str(summary.get("import_id")),
            status=str(summary.get("status")),
            total=int(summary.get("total") or 0),
            success=int(summary.get("success") or 0),
            errors=int(summary.get("errors") or 0),
            duration_s=None if summary.get("duration_s") is None else float(summary["duration_s"]),
            file_path=summary.get("file_path"),
            rejected_rows=[
                {"line": r.get("line"), "field": r.get("field"), "error": r.get("error")}
                | {k: r[k] for k in ("key", "value") if k in r}  # the row's key (connectif_sync.import_rejects)
                for r in rows[:MAX_IMPORT_REJECTS_KEPT]
            ],
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportOutcome:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A source row the library set aside before sending it, and why: the one shape of every rejected row
    (validation, bad UTF-8, suppression, duplicates, oversize rows, purchases), as the state store's
    ``rejected`` table and the rejected-rows page hold it.

    ``source_ref`` names the row in the source (``id=42``), ``field`` the output field at fault, ``reason``
    what is wrong and how to fix it, ``value`` the value as found (or what explains the reason).
    """

    key: str | None
    source_ref: str | None
    field: str
    reason: str
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stored and XCom form: ``{"key", "source_ref", "field", "reason", "value"}``."""
        return {
            "key": self.key,
            "source_ref": self.source_ref,
            "field": self.field,
            "reason": self.reason,
            "value": self.value,
        }

    @property
    def reason_key(self) -> str:
        """How a report counts it: ``"<field>: <reason>"``."""
        return f"{self.field}: {self.reason}"


#: The count fields of :class:`RunSummary`, in the order the pages show them.
COUNT_FIELDS = (
    "extracted", "new", "changed", "unchanged", "deleted", "invalid", "duplicate", "suppressed",
    "to_send", "sent", "rejected", "rejected_by_connectif", "files", "bytes",
)  # fmt: skip


@dataclass
class RunSummary:
    """What one Airflow run of a Connectif DAG did; pushed as XCom ``summary`` and kept in the run history.

    ``extra`` holds what only one object has (a purchases window, coupon sets refilled, warehouse tables...);
    it is written at the top level of :meth:`as_dict`, as the DAGs always did. ``plan`` is a dry run's
    estimate (API requests, minutes). ``library_run_id`` names the state store's run whose rejected rows
    belong to this Airflow run.
    """

    dag_id: str
    run_id: str
    object: SyncObject
    state: RunState = RunState.SUCCESS
    dry_run: bool = False
    mode: str | None = None
    extracted: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    invalid: int = 0
    duplicate: int = 0
    suppressed: int = 0
    to_send: int = 0
    sent: int = 0
    rejected: int = 0
    rejected_by_connectif: int = 0
    files: int = 0
    bytes: int = 0
    api_requests: int | dict[str, Any] | None = None
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    import_outcomes: list[ImportOutcome] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    library_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def imports(self) -> int:
        return len(self.import_outcomes)

    @property
    def requests_spent(self) -> int | None:
        """API requests the run spent (None for a dry run or when unknown: see :attr:`plan`)."""
        if isinstance(self.api_requests, int):
            return self.api_requests
        if isinstance(self.api_requests, dict) and not self.dry_run:
            value = self.api_requests.get("api_requests")
            return int(value) if isinstance(value, int | float) else None
        return None

    def add_import(self, outcome: ImportOutcome) -> None:
        self.import_outcomes.append(outcome)

    def as_dict(self) -> dict[str, Any]:
        """The ``summary`` XCom: JSON-safe, with the keys earlier versions pushed (``imports`` is a count)."""
        out: dict[str, Any] = {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "object": self.object.value,
            "state": self.state.value,
            "dry_run": self.dry_run,
            "mode": self.mode,
        }
        out.update({name: getattr(self, name) for name in COUNT_FIELDS})
        out.update(
            {
                "imports": self.imports,
                "api_requests": self.api_requests,
                "rejected_by_reason": dict(self.rejected_by_reason),
                "notes": list(self.notes),
                "import_outcomes": [dataclasses.asdict(i) for i in self.import_outcomes],
                "plan": self.plan,
                "library_run_id": self.library_run_id,
            }
        )
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSummary:
        """Read a summary back (from the run history or an XCom); unknown keys land in ``extra``."""
        known = {f.name for f in dataclasses.fields(cls)} | {"imports"}
        obj = data.get("object") or SyncObject.from_dag_id(str(data.get("dag_id") or "")) or SyncObject.EXPORTS
        summary = cls(
            dag_id=str(data.get("dag_id") or SyncObject(obj).dag_id),
            run_id=str(data.get("run_id") or ""),
            object=SyncObject(obj),
            state=RunState(data.get("state") or (RunState.PLANNED if data.get("dry_run") else RunState.SUCCESS)),
            dry_run=bool(data.get("dry_run")),
            mode=data.get("mode"),
            api_requests=data.get("api_requests"),
            rejected_by_reason={str(k): int(v) for k, v in (data.get("rejected_by_reason") or {}).items()},
            notes=[str(n) for n in data.get("notes") or []],
            import_outcomes=[ImportOutcome.from_dict(i) for i in data.get("import_outcomes") or []],
            plan=data.get("plan"),
            library_run_id=data.get("library_run_id"),
            extra={k: v for k, v in data.items() if k not in known},
        )
        for name in COUNT_FIELDS:
            setattr(summary, name, int(data.get(name) or 0))
        return summary


@dataclass(frozen=True)
class RequestEstimate:
    """A dry run's estimate of one-request-per-row work (purchases, erasures) at the shared rate limit."""

    api_requests: int
    expected_minutes: float
    rate_limit_per_minute: float

    @classmethod
    def for_calls(cls, calls: int, per_minute: float) -> RequestEstimate:
        """``per_minute``: the connection's own budget (its ``rate_limit_per_minute``), not a copied default."""
        return cls(api_requests=calls, expected_minutes=round(calls / per_minute, 1), rate_limit_per_minute=per_minute)

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_requests": self.api_requests,
            "expected_minutes": self.expected_minutes,
            "rate_limit_per_minute": self.rate_limit_per_minute,
        }
