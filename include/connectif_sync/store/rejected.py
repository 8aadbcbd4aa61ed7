"""Rows set aside: by our validation (``rejected``, per run) and by Connectif's error reports (``pending``).

Why a module of its own: these are what a user browses to fix the source; they are paged by index (keyset
pagination), kept for the last few runs only, and never decide what is confirmed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from connectif_sync.contract import RejectedRow
from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _no_nul, _now, pending_table, rejected_table, runs_table, suppressed_table

KEEP_REJECTED_RUNS = 5
"""Runs per object whose rejected rows are kept."""


def _values(row: dict[str, Any] | RejectedRow) -> tuple[str | None, str | None, str | None, str, str | None]:
    """``(key, source_ref, field, reason, value)`` of a rejected row or its dictionary."""
    if isinstance(row, RejectedRow):
        return row.key, row.source_ref, row.field, row.reason, row.value
    return row.get("key"), row.get("source_ref"), row.get("field"), row["reason"], row.get("value")


class RejectedRows(StoreBase):
    """Recording and browsing rejected rows, and the rows Connectif rejected (pending retry)."""

    def record_rejected(self, obj: str, run_id: str, rows: Sequence[dict[str, Any] | RejectedRow]) -> None:
        """Store rows validation set aside in this run (any number of calls per run; each a
        :class:`~connectif_sync.contract.RejectedRow` or its dictionary); :meth:`finish_run` keeps only the last
        few runs per object."""
        self._write()
        if not rows:
            return
        values = [_values(r) for r in rows]
        now = _now()
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                # The driver's executemany directly: SQLAlchemy's per-row parameter processing costs ten
                # times the insert itself (a first run of a million contacts stores about 20,000 of them).
                t = now.strftime("%Y-%m-%d %H:%M:%S.%f")
                conn.exec_driver_sql(
                    "INSERT INTO connectif_sync_rejected "
                    "(run_id, object, key, source_ref, field, reason, value, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(run_id, obj, key, ref, field, reason, value, t) for key, ref, field, reason, value in values],
                )
                return
            conn.execute(
                rejected_table.insert(),
                [
                    {
                        "run_id": run_id,
                        "object": obj,
                        "key": _no_nul(key),
                        "source_ref": _no_nul(ref),
                        "field": field,
                        "reason": reason,
                        "value": _no_nul(value),
                        "recorded_at": now,
                    }
                    for key, ref, field, reason, value in values
                ],
            )

    def rejected(self, obj: str | None = None, run_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Rows set aside by validation: of ``run_id``, else of the latest run of ``obj`` (else of any); the
        first ``limit`` (see :meth:`iter_rejected` for all of them, :meth:`count_rejected` for how many)."""
        return list(itertools.islice(self.iter_rejected(obj, run_id), max(limit, 0)))

    def _rejected_run(self, conn: sa.Connection, obj: str | None, run_id: str | None) -> str | None:
        """``run_id``, or the latest non-plan run of ``obj``; ``""`` when ``obj`` has no run (nothing to list)."""
        if run_id is not None or obj is None:
            return run_id
        latest = conn.execute(
            sa.select(runs_table.c.run_id)
            .where(runs_table.c.object == obj, runs_table.c.mode != "plan")
            .order_by(runs_table.c.started_at.desc())
            .limit(1)
        ).scalar()
        return "" if latest is None else str(latest)

    def _rejected_filter(self, obj: str | None, run_id: str | None) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = []
        if obj:
            where.append(rejected_table.c.object == obj)
        if run_id:
            where.append(rejected_table.c.run_id == run_id)
        return where

    def iter_rejected(
        self, obj: str | None = None, run_id: str | None = None, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every row set aside in ``run_id`` (else the latest run of ``obj``), in order, read a page at a time."""
        if self._missing:
            return
        with self.engine.connect() as conn:
            run_id = self._rejected_run(conn, obj, run_id)
        if run_id == "":
            return
        t = rejected_table
        columns = (t.c.run_id, t.c.object, t.c.key, t.c.source_ref, t.c.field, t.c.reason, t.c.value)
        last = -1
        while True:
            q = (
                sa.select(t.c.id, *columns)
                .where(t.c.id > last, *self._rejected_filter(obj, run_id))
                .order_by(t.c.id)
                .limit(page_size)
            )
            with self.engine.connect() as conn:
                page = [dict(r._mapping) for r in conn.execute(q)]
            for row in page:
                last = row.pop("id")
                yield row
            if len(page) < page_size:
                return

    def count_rejected(self, obj: str | None = None, run_id: str | None = None) -> int:
        """How many rows :meth:`iter_rejected` yields for the same arguments."""
        if self._missing:
            return 0
        with self.engine.connect() as conn:
            run_id = self._rejected_run(conn, obj, run_id)
            if run_id == "":
                return 0
            q = sa.select(sa.func.count()).select_from(rejected_table).where(*self._rejected_filter(obj, run_id))
            return int(conn.execute(q).scalar() or 0)

    def rejected_page(
        self,
        obj: str,
        run_id: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        key: str | None = None,
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """One page of a run's rejected rows, oldest first, after row ``after_id`` (keyset pagination).

        Every filter is an equality (``key``: the exact key or, ending in ``*``, a prefix), so each page is
        one range read of an index of :data:`REJECTED_BROWSE_INDEXES`, however many rows the run has.
        """
        if self._missing:
            return []
        t = rejected_table
        q = sa.select(t.c.id, t.c.run_id, t.c.object, t.c.key, t.c.source_ref, t.c.field, t.c.reason, t.c.value)
        q = q.where(t.c.object == obj, t.c.run_id == run_id)
        if field:
            q = q.where(t.c.field == field)
        if reason:
            q = q.where(t.c.reason == reason)
        if key:
            if key.endswith("*"):
                prefix = key[:-1]
                q = q.where(t.c.key >= prefix, t.c.key < prefix + "\U0010ffff")
            else:
                q = q.where(t.c.key == key)
        if after_id is not None:
            q = q.where(t.c.id > after_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.id).limit(limit))]

    def rejected_run_ids(self, obj: str) -> list[str]:
        """The library runs of ``obj`` whose rejected rows are kept (newest first)."""
        if self._missing:
            return []
        with self.engine.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    sa.select(runs_table.c.run_id)
                    .where(runs_table.c.object == obj, runs_table.c.mode != "plan")
                    .order_by(runs_table.c.started_at.desc())
                    .limit(KEEP_REJECTED_RUNS)
                )
            ]

    def pending_page(self, obj: str, *, after_key: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """One page of the rows Connectif rejected and that go again next run, by key (keyset pagination)."""
        if self._missing:
            return []
        t = pending_table
        q = sa.select(t).where(t.c.object == obj)
        if after_key is not None:
            q = q.where(t.c.key > after_key)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.key).limit(limit))]

    def counts(self, obj: str) -> dict[str, int]:
        """Rows pending retry and suppressed keys of ``obj`` (two index-only counts)."""
        if self._missing:
            return {"pending": 0, "suppressed": 0}
        with self.engine.connect() as conn:
            pending = conn.execute(
                sa.select(sa.func.count()).select_from(pending_table).where(pending_table.c.object == obj)
            ).scalar_one()
            try:
                suppressed = conn.execute(
                    sa.select(sa.func.count()).select_from(suppressed_table).where(suppressed_table.c.object == obj)
                ).scalar_one()
            except sa.exc.OperationalError:
                suppressed = 0
        return {"pending": int(pending), "suppressed": int(suppressed)}
