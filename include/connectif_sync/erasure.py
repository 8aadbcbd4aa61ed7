"""Contact erasure requests kept in the ERP: the pending ones, and recording when each was done.

A request is done once Connectif no longer has the contact (deleted now, or already absent: a 404 on
delete counts as done). ``done_at`` is written per request right after Connectif confirmed, so a run that
stops half-way resumes with exactly the requests still pending.

:func:`erase_contacts` does the whole sequence per request: delete in Connectif, record the outcome in the
state store, suppress the email, mark the request done. A try that fails after the deletion (e.g. the ERP
refused the ``done_at`` write) leaves the request pending; the retry's delete then answers 404, and the
outcome recorded by the earlier try makes it count as deleted, not as "not in Connectif".

:func:`plan_erasures` decides which requests can go (emails normalised as the contacts sync does; a request
whose email is no address stays pending, set aside with its reason), :func:`run_erasures` does the run's
bookkeeping around :func:`erase_contacts`, and :func:`erasure_summary` is the run's :class:`RunSummary`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connectif_sync.contract import REQUESTS_PER_MINUTE, RejectedRow, RequestEstimate, RunState, RunSummary, SyncObject
from connectif_sync.mappings import FieldSpec
from connectif_sync.shape import shape_email
from connectif_sync.store import StateStore
from connectif_sync.timefmt import parse_when


@dataclass(frozen=True)
class ErasureTable:
    """Where the ERP keeps erasure requests; the defaults are the sample ERP's ``erasure_requests``."""

    table: str = "erasure_requests"
    schema: str | None = None
    id_column: str = "id"
    email_column: str = "email"
    requested_at_column: str = "requested_at"
    done_at_column: str = "done_at"

    def sa_table(self) -> sa.TableClause:
        return sa.table(
            self.table,
            sa.column(self.id_column),
            sa.column(self.email_column),
            sa.column(self.requested_at_column, sa.DateTime),
            sa.column(self.done_at_column, sa.DateTime),
            schema=self.schema,
        )


@dataclass(frozen=True)
class ErasureRequest:
    """A pending request as the ERP holds it (the email exactly as typed; normalising is the caller's)."""

    id: int
    email: str
    requested_at: datetime | None


def pending_erasures(
    engine: Engine, *, table: ErasureTable = ErasureTable(), limit: int | None = None
) -> list[ErasureRequest]:
    """Requests with no ``done_at``, oldest first."""
    t = table.sa_table()
    stmt = (
        sa.select(t.c[table.id_column], t.c[table.email_column], t.c[table.requested_at_column])
        .where(t.c[table.done_at_column].is_(None))
        .order_by(t.c[table.requested_at_column], t.c[table.id_column])
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        return [
            ErasureRequest(id=int(i), email="" if e is None else str(e), requested_at=_as_datetime(r))
            for i, e, r in conn.execute(stmt)
        ]


def mark_erasures_done(
    engine: Engine, ids: Iterable[int], *, when: datetime | None = None, table: ErasureTable = ErasureTable()
) -> int:
    """Record ``done_at`` for the given requests; already-done ones keep their first date."""
    stamp = (when or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    id_list = sorted(set(ids))
    if not id_list:
        return 0
    t = table.sa_table()
    changed = 0
    with engine.begin() as conn:
        for start in range(0, len(id_list), 500):
            part = id_list[start : start + 500]
            result = conn.execute(
                sa.update(t)
                .where(t.c[table.id_column].in_(part), t.c[table.done_at_column].is_(None))
                .values({table.done_at_column: stamp})
            )
            changed += result.rowcount or 0
    return changed


@dataclass(frozen=True)
class ErasureCounts:
    """What a job run (all its tries) erased: ``deleted`` and ``absent`` count every request the run finished,
    earlier tries included; ``this_try`` is how many this call handled, ``deleted_by_earlier_try`` how many of
    those answered 404 because an earlier try had deleted the contact."""

    deleted: int
    absent: int
    this_try: int
    deleted_by_earlier_try: int

    @property
    def finished_by_earlier_tries(self) -> int:
        return max(0, self.deleted + self.absent - self.this_try)


def erase_contacts(
    todo: Sequence[tuple[int, str]],
    delete: Callable[[str], bool],
    store: StateStore,
    engine: Engine,
    *,
    run: str,
    table: ErasureTable = ErasureTable(),
) -> ErasureCounts:
    """Erase each ``(request id, normalised email)``: ``delete(email)`` in Connectif (True: deleted, False:
    404), then the outcome goes to the state store under ``run`` (the job run, the same for all its tries), the
    email on the suppression list, and ``done_at`` into the ERP, in that order, one request at a time."""
    by_earlier = 0
    for request_id, email in todo:
        found = delete(email)
        kept = store.record_erasure(str(request_id), email, "deleted" if found else "absent", run)
        if kept == "deleted" and not found:
            by_earlier += 1
        # Before the request is marked done: a run stopped in between suppresses it again.
        store.suppress("contacts", [email], f"erasure request id={request_id}")
        mark_erasures_done(engine, [request_id], table=table)
    totals = store.erasure_counts(run)
    return ErasureCounts(
        deleted=totals.get("deleted", 0),
        absent=totals.get("absent", 0),
        this_try=len(todo),
        deleted_by_earlier_try=by_earlier,
    )


@dataclass(frozen=True)
class ErasurePlan:
    """What a run can do with the pending requests: ``todo`` as ``(request id, normalised email)``, and the
    requests set aside (rejected rows: their email is no address, so they stay pending for a human)."""

    pending: int
    todo: list[tuple[int, str]]
    invalid: list[dict[str, Any]]


def plan_erasures(pending: Sequence[ErasureRequest]) -> ErasurePlan:
    """Normalise the requests' emails as the contacts sync does (trimmed, lower-cased, NFC) and check them."""
    shaped, problems = shape_email(
        FieldSpec(name="_email", column="email", type="email"), pa.array([r.email for r in pending], pa.string())
    )
    emails: list[str | None] = shaped.to_pylist()
    bad = {int(i) for problem in problems for i in problem.mask.nonzero()[0]}
    invalid = [
        RejectedRow(
            key=r.email,
            source_ref=f"id={r.id}",
            field="email",
            reason="invalid email address" if emails[i] else "empty email",
            value=r.email[:200],
        ).as_dict()
        for i, r in enumerate(pending)
        if i in bad or not emails[i]
    ]
    todo = [(r.id, str(emails[i])) for i, r in enumerate(pending) if i not in bad and emails[i]]
    return ErasurePlan(pending=len(pending), todo=todo, invalid=invalid)


@dataclass
class ErasureResult:
    """What the erase step did (its XCom): a dry run only counts; ``deleted``/``absent`` cover every try."""

    dry_run: bool
    pending: int
    to_delete: int
    invalid: list[dict[str, Any]] = field(default_factory=list)
    library_run_id: str | None = None
    deleted: int = 0
    absent: int = 0
    deleted_by_earlier_try: int = 0
    finished_by_earlier_tries: int = 0

    @classmethod
    def planned(cls, plan: ErasurePlan) -> ErasureResult:
        return cls(dry_run=True, pending=plan.pending, to_delete=len(plan.todo), invalid=plan.invalid)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErasureResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def run_erasures(
    plan: ErasurePlan,
    delete: Callable[[str], bool],
    store: StateStore,
    engine: Engine,
    *,
    attempt: str,
    run: str,
    table: ErasureTable = ErasureTable(),
) -> ErasureResult:
    """Erase the plan's requests as one library run ``attempt`` (the rejected rows filed under it); the
    counts are of job run ``run``, the same for all its tries (a retry counts what earlier tries deleted)."""
    run_id = store.begin_run("erasure", "erasure", None, attempt)
    store.record_rejected("erasure", run_id, plan.invalid)
    counts = erase_contacts(plan.todo, delete, store, engine, run=run, table=table)
    store.finish_run(run_id, files=[], high_water=None, report={"deleted": counts.deleted, "absent": counts.absent})
    return ErasureResult(
        dry_run=False,
        pending=plan.pending,
        to_delete=len(plan.todo),
        invalid=plan.invalid,
        library_run_id=run_id,
        deleted=counts.deleted,
        absent=counts.absent,
        deleted_by_earlier_try=counts.deleted_by_earlier_try,
        finished_by_earlier_tries=counts.finished_by_earlier_tries,
    )


def erasure_notes(result: ErasureResult) -> list[str]:
    """The summary's notes: the first requests left pending, and what earlier tries or Connectif did."""
    notes = [f"request {r['source_ref']}: {r['reason']} ({r['value']!r}), left pending" for r in result.invalid[:10]]
    if result.absent:
        notes.append(f"{result.absent} emails were not in Connectif (counted as done)")
    if result.finished_by_earlier_tries:
        notes.append(f"{result.finished_by_earlier_tries} requests were finished by an earlier try of this run")
    if result.deleted_by_earlier_try:
        notes.append(f"{result.deleted_by_earlier_try} contacts deleted by an earlier try (404 now) counted as deleted")
    return notes


def erasure_summary(
    dag_id: str, run_id: str, result: ErasureResult, *, per_minute: float = REQUESTS_PER_MINUTE
) -> RunSummary:
    """The run summary of an erasure run (``sent``: requests done, deleted now or already absent)."""
    reasons: dict[str, int] = {}
    for r in result.invalid:
        label = f"{r['field']}: {r['reason']}"
        reasons[label] = reasons.get(label, 0) + 1
    estimate = RequestEstimate.for_calls(result.to_delete, per_minute).as_dict()
    return RunSummary(
        dag_id=dag_id,
        run_id=run_id,
        object=SyncObject.CONTACT_ERASURE,
        dry_run=result.dry_run,
        state=RunState.PLANNED if result.dry_run else RunState.SUCCESS,
        library_run_id=result.library_run_id,
        to_send=result.to_delete,
        sent=result.deleted + result.absent,
        deleted=result.deleted,
        invalid=len(result.invalid),
        rejected=len(result.invalid),
        rejected_by_reason=reasons,
        api_requests=estimate if result.dry_run else result.to_delete,
        plan=estimate if result.dry_run else None,
        notes=erasure_notes(result),
        extra={"pending": result.pending, "to_delete": result.to_delete, "absent": result.absent},
    )


def _as_datetime(value: object) -> datetime | None:
    """SQLite hands back text for a lightweight ``sa.table``; PostgreSQL a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return parse_when(str(value))
