"""Contact erasure requests kept in the ERP: the pending ones, and recording when each was done.

A request is done once Connectif no longer has the contact (deleted now, or already absent: a 404 on
delete counts as done). ``done_at`` is written per request right after Connectif confirmed, so a run that
stops half-way resumes with exactly the requests still pending.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine


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


def _as_datetime(value: object) -> datetime | None:
    """SQLite hands back text for a lightweight ``sa.table``; PostgreSQL a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
