"""Alert states: whether each alert (source, kind) is active, so that people are told when it changes.

Why a module of its own: the provider's alerting reads and writes only this table (raised, cleared), never
the sync state.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _now, alerts_table


class AlertStates(StoreBase):
    """The last state of every alert, and its transitions."""

    def alert_transition(self, source: str, kind: str, active: bool, detail: str | None = None) -> str | None:
        """Record the state of alert (``source``, ``kind``); ``"raised"`` when it just became active,
        ``"cleared"`` when it just stopped being active, None when nothing changed (nobody is told twice)."""
        self._write()
        now = _now()
        key = (alerts_table.c.source == source) & (alerts_table.c.kind == kind)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(alerts_table.c.active).where(key).with_for_update()).first()
            before = bool(row[0]) if row is not None else False
            if row is None:
                if not active:
                    return None  # never raised: there is nothing to clear
                conn.execute(
                    alerts_table.insert().values(source=source, kind=kind, active=True, detail=detail, changed_at=now)
                )
            elif before != active:
                conn.execute(alerts_table.update().where(key).values(active=active, detail=detail, changed_at=now))
            if before == active:
                return None
        return "raised" if active else "cleared"

    def alerts(self, source: str | None = None) -> list[dict[str, Any]]:
        """The recorded alert states (of ``source``, or all), active ones first."""
        if self._missing:
            return []
        q = sa.select(alerts_table).order_by(alerts_table.c.active.desc(), alerts_table.c.source, alerts_table.c.kind)
        if source:
            q = q.where(alerts_table.c.source == source)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q)]
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before alerts, read-only
            return []
