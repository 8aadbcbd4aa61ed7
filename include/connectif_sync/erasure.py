"""Contact erasure requests kept in the ERP: the pending ones, and recording when each was done.

A request is done once Connectif no longer has the contact (deleted now, or already absent: a 404 on
delete counts as done). ``done_at`` is written per request right after Connectif confirmed, so a run that
stops half-way resumes with exactly the requests still pending.

:func:`erase_contacts` does the whole sequence per request: delete in Connectif, record the outcome in the
state store, suppress the email, mark the request done. A try that fails after the deletion (e.g. the ERP
refused the ``done_at`` write) leaves the request pending; the retry's delete then answers 404, and the
outcome recorded by the earlier try makes it count as deleted, not as "not in Connectif".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

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


def _as_datetime(value: object) -> datetime | None:
    """SQLite hands back text for a lightweight ``sa.table``; PostgreSQL a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return parse_when(str(value))
