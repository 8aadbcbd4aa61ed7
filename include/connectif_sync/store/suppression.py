"""Suppression: keys that are never sent again whatever the source says (contacts erased on request).

Why a module of its own: it outranks every other rule of a sync (full resyncs included), so it is written and
read in one place, by key hash as the sync compares rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from connectif_sync.hashing import as_signed, hash_strings
from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _LOOKUP_BATCH, _now, suppressed_table


class Suppression(StoreBase):
    """The suppression list: add, withdraw, list and page keys, and their hashes for the sync."""

    def suppress(self, obj: str, keys: Iterable[str], reason: str) -> int:
        """Never send these keys of ``obj`` again (e.g. contacts erased on request); returns how many are new.

        Keys are compared as the sync computes them (contacts: the trimmed, lower-cased email)."""
        self._write()
        wanted = sorted({k for k in keys if k})
        if not wanted:
            return 0
        hashes = as_signed(hash_strings(pa.array(wanted, pa.string()))).tolist()
        now, added = _now(), 0
        with self.engine.begin() as conn:
            for i in range(0, len(wanted), _LOOKUP_BATCH):
                part = wanted[i : i + _LOOKUP_BATCH]
                known = {
                    r[0]
                    for r in conn.execute(
                        sa.select(suppressed_table.c.key).where(
                            suppressed_table.c.object == obj, suppressed_table.c.key.in_(part)
                        )
                    )
                }
                rows = [
                    {"object": obj, "key": k, "key_hash": h, "reason": reason, "suppressed_at": now}
                    for k, h in zip(part, hashes[i : i + _LOOKUP_BATCH], strict=True)
                    if k not in known
                ]
                if rows:
                    conn.execute(suppressed_table.insert(), rows)
                    added += len(rows)
        return added

    def unsuppress(self, obj: str, keys: Iterable[str]) -> int:
        """Allow these keys to be sent again (an erasure withdrawn); returns how many were suppressed."""
        self._write()
        wanted = sorted(set(keys))
        removed = 0
        with self.engine.begin() as conn:
            for i in range(0, len(wanted), _LOOKUP_BATCH):
                result = conn.execute(
                    suppressed_table.delete().where(
                        suppressed_table.c.object == obj, suppressed_table.c.key.in_(wanted[i : i + _LOOKUP_BATCH])
                    )
                )
                removed += result.rowcount or 0
        return removed

    def suppressed(self, obj: str | None = None) -> list[dict[str, Any]]:
        """The suppressed keys (of ``obj``, or all) with their reason, oldest first."""
        if self._missing:
            return []
        q = sa.select(
            suppressed_table.c.object, suppressed_table.c.key, suppressed_table.c.reason,
            suppressed_table.c.suppressed_at,
        ).order_by(suppressed_table.c.suppressed_at, suppressed_table.c.key)  # fmt: skip
        if obj:
            q = q.where(suppressed_table.c.object == obj)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q)]
        except sa.exc.OperationalError:  # a store created before suppression, opened read-only
            return []

    def suppressed_hashes(self, obj: str) -> dict[int, str]:
        """Key hash -> reason of every suppressed key of ``obj`` (the sync checks each row against them)."""
        if self._missing:
            return {}
        q = sa.select(suppressed_table.c.key_hash, suppressed_table.c.reason).where(suppressed_table.c.object == obj)
        try:
            with self.engine.connect() as conn:
                return {int(h): r for h, r in conn.execute(q)}
        except sa.exc.OperationalError:  # a store created before suppression, opened read-only
            return {}

    def suppressed_page(self, obj: str, *, after_key: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """One page of the suppression list of ``obj``, by key (keyset pagination)."""
        if self._missing:
            return []
        t = suppressed_table
        q = sa.select(t.c.object, t.c.key, t.c.reason, t.c.suppressed_at).where(t.c.object == obj)
        if after_key is not None:
            q = q.where(t.c.key > after_key)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.key).limit(limit))]
        except sa.exc.OperationalError:
            return []
