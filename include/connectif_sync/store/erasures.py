"""Erasures: how Connectif answered each erasure request, and which job run finished it.

Why a module of its own: a retry whose delete answers 404 because an earlier try deleted the contact must
still count it as deleted, which needs the earlier answer kept per request.
"""

from __future__ import annotations

import sqlalchemy as sa

from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _now, erasures_table

ERASURE_OUTCOMES = ("deleted", "absent")
"""``deleted``: Connectif had the contact and deleted it; ``absent``: it answered 404 (nothing to erase)."""


class ErasureLog(StoreBase):
    """Recording and counting erasure outcomes."""

    def record_erasure(self, request_id: str, email: str, outcome: str, run: str) -> str:
        """Record how Connectif answered the deletion of one request's contact, for job run ``run``; returns
        the outcome kept. ``absent`` after an earlier ``deleted`` of the same request and email stays
        ``deleted``: the 404 is the earlier try's own deletion, not a contact Connectif never had."""
        self._write()
        if outcome not in ERASURE_OUTCOMES:
            raise ValueError(f"outcome must be one of {ERASURE_OUTCOMES}, got {outcome!r}")
        t = erasures_table
        with self.engine.begin() as conn:
            earlier = conn.execute(sa.select(t.c.email, t.c.outcome).where(t.c.request_id == request_id)).first()
            if earlier is not None and earlier.email == email and earlier.outcome == "deleted":
                outcome = "deleted"
            conn.execute(t.delete().where(t.c.request_id == request_id))
            conn.execute(
                t.insert().values(request_id=request_id, email=email, outcome=outcome, run=run, recorded_at=_now())
            )
        return outcome

    def erasure_counts(self, run: str) -> dict[str, int]:
        """Requests finished by job run ``run`` (all its tries), per outcome."""
        if self._missing:
            return {}
        t = erasures_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.outcome, sa.func.count()).where(t.c.run == run).group_by(t.c.outcome))
            return {str(outcome): int(n) for outcome, n in rows}
