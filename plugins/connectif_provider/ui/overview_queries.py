"""The Connectif page's reads of the state store, one query per kind for all six objects at once.

Why apart from :class:`~connectif_sync.store.StateStore`: the page used the store's per-object methods, 18
round trips (history, pending, suppressed for each object), which on a loaded machine took the page over its
300 ms target (``make bench-ui``). These read the same tables through the store's engine, read-only; they are
the only store queries the plugin adds (the lead may move them into the store package).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from connectif_sync.store import RunHistoryEntry, pending_table, run_history_table, suppressed_table

_HISTORY_COLUMNS = ("dag_id", "run_id", "object", "state", "dry_run", "library_run_id", "recorded_at", "to_send",
                    "sent", "changed", "unchanged", "rejected", "api_requests")  # fmt: skip


def run_histories(store: Any, objects: Sequence[str], limit: int = 30) -> dict[str, list[RunHistoryEntry]]:
    """The latest ``limit`` runs of each object (newest first), in one query (a window over the index
    ``(object, recorded_at)``)."""
    out: dict[str, list[RunHistoryEntry]] = {o: [] for o in objects}
    if store._missing or not objects:
        return out
    t = run_history_table
    rank = sa.func.row_number().over(partition_by=t.c.object, order_by=t.c.recorded_at.desc()).label("rank")
    inner = sa.select(*(t.c[c] for c in _HISTORY_COLUMNS), rank).where(t.c.object.in_(list(objects))).subquery()
    q = sa.select(*(inner.c[c] for c in _HISTORY_COLUMNS)).where(inner.c.rank <= limit)
    q = q.order_by(inner.c.object, inner.c.recorded_at.desc())
    try:
        with store.engine.connect() as conn:
            for row in conn.execute(q):
                out[row.object].append(RunHistoryEntry(**row._mapping))
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before the history
        pass
    return out


def object_counts(store: Any, objects: Sequence[str]) -> dict[str, dict[str, int]]:
    """Rows pending retry and suppressed keys per object: two grouped index-only counts."""
    out = {o: {"pending": 0, "suppressed": 0} for o in objects}
    if store._missing or not objects:
        return out
    with store.engine.connect() as conn:
        for name, table in (("pending", pending_table), ("suppressed", suppressed_table)):
            q = (
                sa.select(table.c.object, sa.func.count())
                .where(table.c.object.in_(list(objects)))
                .group_by(table.c.object)
            )
            try:
                for obj, count in conn.execute(q):
                    out[obj][name] = int(count)
            except sa.exc.OperationalError:  # an old store without the suppression list
                conn.rollback()
    return out
