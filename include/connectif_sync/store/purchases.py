"""Purchases sent through the API, by id, with their outcome: a re-run never sends one twice.

Why a module of its own: purchases are not bulk-imported files, so they have no manifest, no diff index and
no ledger of lines; one row per purchase id is their whole state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _LOOKUP_BATCH, _now, purchases_table

PURCHASE_DONE = ("confirmed", "duplicate")
"""Purchase statuses that mean Connectif has it: never send again."""


class PurchaseLog(StoreBase):
    """Which purchases Connectif has, and recording each send's outcome."""

    def purchases_done(self, purchase_ids: Iterable[str]) -> set[str]:
        """The ids among ``purchase_ids`` that Connectif already has (confirmed or answered duplicate)."""
        ids = list(purchase_ids)
        if self._missing or not ids:
            return set()
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(ids), _LOOKUP_BATCH):
                q = sa.select(purchases_table.c.purchase_id).where(
                    purchases_table.c.purchase_id.in_(ids[i : i + _LOOKUP_BATCH]),
                    purchases_table.c.status.in_(PURCHASE_DONE),
                )
                out.update(r[0] for r in conn.execute(q))
        return out

    def record_purchase(self, purchase_id: str, status: str, detail: str | None = None) -> None:
        """Record the outcome of sending one purchase: ``confirmed``, ``duplicate`` (409: Connectif already
        has it) or ``failed`` (sent again next time)."""
        self._write()
        if status not in ("confirmed", "duplicate", "failed"):
            raise ValueError(f"status must be confirmed, duplicate or failed, got {status!r}")
        with self.engine.begin() as conn:
            conn.execute(purchases_table.delete().where(purchases_table.c.purchase_id == purchase_id))
            conn.execute(
                purchases_table.insert().values(
                    purchase_id=purchase_id, status=status, detail=detail, updated_at=_now()
                )
            )

    def purchase_statuses(self) -> Iterator[dict[str, Any]]:
        if self._missing:
            return
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(purchases_table).order_by(purchases_table.c.purchase_id)):
                yield dict(r._mapping)
