"""The diff index: the confirmed hashes of an object, read for change detection.

Why a module of its own: a run compares every extracted row with what Connectif confirmed. A full scan loads
all of an object's hashes at once (:class:`StateIndex`, 24 bytes per key); an incremental run looks up only
the keys it read. On SQLite the hashes are kept as one sorted binary snapshot beside the rows, rewritten with
every confirmation, so that loading a million of them is one read.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _LOOKUP_BATCH, _now, snapshots_table, state_table


@dataclass
class StateIndex:
    """The confirmed hashes of one object, sorted by key hash, for a full-scan diff (24 bytes per key)."""

    key_hashes: np.ndarray
    row_hashes: np.ndarray
    seen: np.ndarray
    source_hashes: np.ndarray | None = None
    _by_source: np.ndarray | None = None  # positions sorted by source hash
    _sorted_sources: np.ndarray | None = None  # source hashes in that order

    @classmethod
    def empty(cls) -> StateIndex:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool))

    def __len__(self) -> int:
        return len(self.key_hashes)

    def positions(self, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position in the index)`` per key hash (position 0 where not found)."""
        if len(self.key_hashes) == 0:
            return np.zeros(len(key_hashes), bool), np.zeros(len(key_hashes), np.int64)
        order = np.argsort(key_hashes)  # sorted probes walk the index in order: much faster
        idx = np.empty(len(key_hashes), dtype=np.int64)
        idx[order] = np.searchsorted(self.key_hashes, key_hashes[order])
        idx[idx == len(self.key_hashes)] = 0
        found = self.key_hashes[idx] == key_hashes
        idx[~found] = 0
        return found, idx

    def lookup(self, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, confirmed row hash)`` per key; marks the found ones as seen (for deletions)."""
        if len(self.key_hashes) == 0:
            return np.zeros(len(key_hashes), bool), np.zeros(len(key_hashes), np.int64)
        found, idx = self.positions(key_hashes)
        self.seen[idx[found]] = True
        return found, np.where(found, self.row_hashes[idx], 0)

    def prepare_sources(self) -> None:
        """Sort the source hashes for :meth:`find_sources` (done on first use; call it before sharing the
        index between threads)."""
        if self.source_hashes is not None and (self._by_source is None or self._sorted_sources is None):
            by_source = np.argsort(self.source_hashes)
            self._sorted_sources = self.source_hashes[by_source]
            self._by_source = by_source

    def find_sources(self, source_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position)`` of rows whose source hash was confirmed (read-only once
        :meth:`prepare_sources` ran: safe from threads)."""
        n = len(source_hashes)
        if self.source_hashes is None or len(self.key_hashes) == 0:
            return np.zeros(n, bool), np.zeros(n, np.int64)
        self.prepare_sources()
        assert self._by_source is not None and self._sorted_sources is not None
        srt = self._sorted_sources
        order = np.argsort(source_hashes)
        at = np.empty(n, dtype=np.int64)
        at[order] = np.searchsorted(srt, source_hashes[order])
        at[at == len(srt)] = 0
        found = (srt[at] == source_hashes) & (source_hashes != 0)
        return found, self._by_source[at]

    def unseen(self) -> np.ndarray:
        return self.key_hashes[~self.seen]


class IndexReads(StoreBase):
    """Reads of the confirmed state (the ledger writes it): whole objects, a few keys, counts."""

    def load_index(self, obj: str) -> StateIndex:
        """All confirmed hashes of ``obj`` (16 bytes per key) for a full-scan comparison."""
        if self._missing:
            return StateIndex.empty()
        sql = (
            "SELECT key_hash, row_hash, COALESCE(source_hash, 0) AS source_hash "
            "FROM connectif_sync_state WHERE object = :obj"
        )
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                snap = _read_snapshot(conn, obj)
            if snap is not None:
                return StateIndex(snap[:, 0].copy(), snap[:, 1].copy(), np.zeros(len(snap), bool), snap[:, 2].copy())
            kh, rh, sh = self._sqlite_columns(sql.replace(":obj", "?"), obj, 3)
        else:
            t = self._arrow(sql, {"obj": obj})
            kh, rh, sh = (
                np.asarray(t.column(c).to_numpy(), dtype=np.int64) for c in ("key_hash", "row_hash", "source_hash")
            )
        if len(kh) == 0:
            return StateIndex.empty()
        order = np.argsort(kh)
        return StateIndex(kh[order], rh[order], np.zeros(len(kh), bool), sh[order])

    def _sqlite_columns(self, sql: str, obj: str, ncols: int) -> tuple[np.ndarray, ...]:
        """Integer columns straight from the sqlite3 cursor into numpy (no per-row SQLAlchemy work)."""
        with self.engine.connect() as conn:
            return _sqlite_int_columns(conn, sql, obj, ncols)

    def lookup(self, obj: str, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, row_hash)`` for a few keys (incremental runs), without loading the whole object."""
        found = np.zeros(len(key_hashes), bool)
        hashes = np.zeros(len(key_hashes), np.int64)
        if self._missing or len(key_hashes) == 0:
            return found, hashes
        confirmed: dict[int, int] = {}
        with self.engine.connect() as conn:
            uniq = np.unique(key_hashes).tolist()
            if self.engine.dialect.name == "sqlite":  # the driver directly: no per-row SQLAlchemy work
                raw = conn.connection.driver_connection
                assert raw is not None
                batch = min(5000, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 1)  # fewer, larger probes
                for i in range(0, len(uniq), batch):
                    part = uniq[i : i + batch]
                    marks = ", ".join("?" * len(part))
                    sql = f"SELECT key_hash, row_hash FROM connectif_sync_state WHERE object = ? AND key_hash IN ({marks})"  # noqa: E501
                    confirmed.update(raw.execute(sql, [obj, *part]).fetchall())
                uniq = []
            for i in range(0, len(uniq), _LOOKUP_BATCH):
                part = uniq[i : i + _LOOKUP_BATCH]
                q = sa.select(state_table.c.key_hash, state_table.c.row_hash).where(
                    state_table.c.object == obj, state_table.c.key_hash.in_(part)
                )
                confirmed.update({int(k): int(r) for k, r in conn.execute(q)})
        for i, k in enumerate(key_hashes.tolist()):
            r = confirmed.get(k)
            if r is not None:
                found[i] = True
                hashes[i] = r
        return found, hashes

    def keys_for(self, obj: str, key_hashes: Iterable[int], limit: int | None = None) -> list[str]:
        """The keys behind some key hashes (to report deletions by name)."""
        wanted = list(key_hashes)[: limit if limit is not None else None]
        out: list[str] = []
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), _LOOKUP_BATCH):
                q = sa.select(state_table.c.key).where(
                    state_table.c.object == obj, state_table.c.key_hash.in_(wanted[i : i + _LOOKUP_BATCH])
                )
                out.extend(r[0] for r in conn.execute(q))
        return sorted(out)

    def confirmed(self, obj: str) -> dict[str, int]:
        """Every confirmed key of ``obj`` with its row hash (for tests and small objects)."""
        if self._missing:
            return {}
        with self.engine.connect() as conn:
            q = sa.select(state_table.c.key, state_table.c.row_hash).where(state_table.c.object == obj)
            return {k: int(h) for k, h in conn.execute(q)}

    def count(self, obj: str) -> int:
        """How many keys of ``obj`` Connectif has confirmed."""
        if self._missing:
            return 0
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(state_table).where(state_table.c.object == obj)
                ).scalar_one()
            )

    def empty_masks(self, obj: str, key_hashes: Iterable[int]) -> dict[int, int | None]:
        """Key hash -> the confirmed row's empty-field mask (None: confirmed before masks were kept) for the
        given keys that are confirmed."""
        wanted = sorted({int(h) for h in key_hashes})
        out: dict[int, int | None] = {}
        if self._missing or not wanted:
            return out
        try:
            with self.engine.connect() as conn:
                for i in range(0, len(wanted), _LOOKUP_BATCH):
                    q = sa.select(state_table.c.key_hash, state_table.c.empty_mask).where(
                        state_table.c.object == obj, state_table.c.key_hash.in_(wanted[i : i + _LOOKUP_BATCH])
                    )
                    out.update({int(k): (None if m is None else int(m)) for k, m in conn.execute(q)})
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before masks, opened read-only
            return {h: None for h in wanted}
        return out


_HASHES_SQL = "SELECT key_hash, row_hash, COALESCE(source_hash, 0) FROM connectif_sync_state WHERE object = ?"


def _sqlite_int_columns(conn: sa.Connection, sql: str, obj: str, ncols: int) -> tuple[np.ndarray, ...]:

    raw = conn.connection.driver_connection
    assert raw is not None
    n = raw.execute("SELECT count(*) FROM connectif_sync_state WHERE object = ?", (obj,)).fetchone()[0]
    cur = raw.execute(sql, (obj,))
    cur.arraysize = 10_000
    flat = np.fromiter(itertools.chain.from_iterable(cur), dtype=np.int64, count=ncols * n)
    return tuple(flat[i::ncols].copy() for i in range(ncols))


def _read_snapshot(conn: sa.Connection, obj: str) -> np.ndarray | None:
    """The object's snapshot as an ``(n, 3)`` int64 array sorted by key hash, or None when there is none."""
    try:
        row = conn.execute(
            sa.select(snapshots_table.c.rows, snapshots_table.c.data).where(snapshots_table.c.object == obj)
        ).first()
    except sa.exc.OperationalError:  # a store created before snapshots, opened read-only
        return None
    if row is None:
        return None
    arr = np.frombuffer(row.data, dtype="<i8").astype(np.int64).reshape(-1, 3)
    if len(arr) != row.rows:
        return None
    return arr


def _write_snapshot(conn: sa.Connection, obj: str, base: np.ndarray | None, data: pa.Table) -> None:
    """Rewrite the snapshot after an upsert of ``data``, in the upsert's transaction (so it never lags).

    ``base`` is the snapshot before the upsert; without one (a store from before snapshots) it is rebuilt
    from ``state`` once, inside this transaction. Rows are keyed by key hash, as the full-scan diff is.
    Cost: each confirmation reads and rewrites the whole snapshot (24 bytes per confirmed key, 24 MB per
    million), a fraction of a second, against seconds saved by every full scan that reads it.
    """
    if base is None:
        kh, rh, sh = _sqlite_int_columns(conn, _HASHES_SQL, obj, 3)
        merged = np.stack([kh, rh, sh], axis=1)
    else:
        new = np.stack(
            [
                np.asarray(data.column(c).to_numpy(zero_copy_only=False), dtype=np.int64)
                if c != "source_hash"
                else np.asarray(pc.fill_null(data.column(c), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
                for c in ("key_hash", "row_hash", "source_hash")
            ],
            axis=1,
        )
        new = new[np.unique(new[:, 0], return_index=True)[1]]  # one entry per key hash
        keep = ~np.isin(base[:, 0], new[:, 0], assume_unique=True) if len(base) else np.zeros(0, bool)
        merged = np.concatenate([base[keep], new])
    merged = merged[np.argsort(merged[:, 0], kind="stable")]
    conn.execute(snapshots_table.delete().where(snapshots_table.c.object == obj))
    conn.execute(
        snapshots_table.insert().values(
            object=obj, rows=len(merged), data=merged.astype("<i8").tobytes(), updated_at=_now()
        )
    )
