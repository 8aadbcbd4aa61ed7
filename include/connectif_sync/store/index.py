"""The diff index: the confirmed hashes of an object, read for change detection.

Why a module of its own: a run compares every extracted row with what Connectif confirmed. A full scan loads
all of an object's hashes at once (:class:`StateIndex`, 24 bytes per key); an incremental run looks up only
the keys it read. On SQLite the hashes are kept as one sorted binary snapshot beside the rows, rewritten with
every confirmation, so that loading a million of them is one read; elsewhere they are read from ``state``
(in bulk, through ADBC on PostgreSQL) and the blocks.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from connectif_sync.hashing import PositionIndex, stable_argsort
from connectif_sync.store import blocks
from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _LOOKUP_BATCH, _now, snapshots_table, state_table


@dataclass
class StateIndex:
    """The confirmed hashes of one object, sorted by key hash, for a full-scan diff (24 bytes per key)."""

    key_hashes: np.ndarray
    row_hashes: np.ndarray
    seen: np.ndarray
    source_hashes: np.ndarray | None = None
    _sources: PositionIndex | None = None  # where each source hash is (a hash table)

    @classmethod
    def empty(cls) -> StateIndex:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool))

    def __len__(self) -> int:
        return len(self.key_hashes)

    def positions(self, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position in the index)`` per key hash (position 0 where not found)."""
        if len(self.key_hashes) == 0:
            return np.zeros(len(key_hashes), bool), np.zeros(len(key_hashes), np.int64)
        order = stable_argsort(key_hashes)  # sorted probes walk the index in order: much faster
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
        """Index the source hashes for :meth:`find_sources` (done on first use; call it before sharing the
        index between threads)."""
        if self.source_hashes is not None and self._sources is None:
            self._sources = PositionIndex(self.source_hashes)

    def find_sources(self, source_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position)`` of rows whose source hash was confirmed (read-only once
        :meth:`prepare_sources` ran: safe from threads)."""
        n = len(source_hashes)
        if self.source_hashes is None or len(self.key_hashes) == 0:
            return np.zeros(n, bool), np.zeros(n, np.int64)
        self.prepare_sources()
        assert self._sources is not None
        return self._sources.find(source_hashes)

    def unseen(self) -> np.ndarray:
        return self.key_hashes[~self.seen]


class IndexReads(StoreBase):
    """Reads of the confirmed state (the ledger writes it): whole objects, a few keys, counts.

    The confirmed state of an object is the rows of ``state`` (earlier versions) overlaid by its blocks in the
    order they were appended (:mod:`~connectif_sync.store.blocks`); on SQLite its hashes are also one snapshot.
    """

    def load_index(self, obj: str) -> StateIndex:
        """All confirmed hashes of ``obj`` (24 bytes per key) for a full-scan comparison."""
        if self._missing:
            return StateIndex.empty()
        with self.engine.connect() as conn:
            snap = self._hashes(conn, obj)
        if len(snap) == 0:
            return StateIndex.empty()
        return StateIndex(snap[:, 0].copy(), snap[:, 1].copy(), np.zeros(len(snap), bool), snap[:, 2].copy())

    def _hashes(self, conn: sa.Connection, obj: str) -> np.ndarray:
        """The confirmed (key hash, row hash, source hash or 0) of ``obj``, ``(n, 3)`` sorted by key hash: the
        snapshot on SQLite, else ``state`` overlaid by the blocks."""
        if self.engine.dialect.name == "sqlite":
            snap = _read_snapshot(conn, obj)
            if snap is not None:
                return snap
        return self._merged_hashes(conn, obj)

    def _merged_hashes(self, conn: sa.Connection, obj: str) -> np.ndarray:
        """``state`` overlaid by the blocks of ``obj`` (what the snapshot holds), read through ``conn``."""
        if self.engine.dialect.name == "sqlite":
            legacy = np.stack(_sqlite_int_columns(conn, _HASHES_SQL, obj, 3), axis=1)
        else:
            sql = (
                "SELECT key_hash, row_hash, COALESCE(source_hash, 0) AS source_hash "
                "FROM connectif_sync_state WHERE object = :obj"
            )
            t = self._arrow(sql, {"obj": obj})
            legacy = blocks.hashes_of(t) if t.num_rows else np.empty((0, 3), np.int64)
        layers = [legacy, *(blocks.hashes_of(b) for b in self._blocks(conn, obj, blocks.HASHES))]
        return blocks.latest_hashes(layers)

    def _blocks(
        self, conn: sa.Connection, obj: str, columns: tuple[str, ...], key_hashes: np.ndarray | None = None
    ) -> Iterator[pa.Table]:
        """The blocks of ``obj`` in order (none in a store from before blocks opened read-only)."""
        if self._no_blocks:
            return iter(())
        return blocks.read(conn, obj, columns, key_hashes)

    def lookup_index(self, obj: str) -> StateIndex | None:
        """The confirmed key and row hashes of ``obj`` read once for a whole incremental run (SQLite's
        snapshot, views of its bytes: no copy), or None where the store has no snapshot: then :meth:`lookup`
        asks for each chunk's keys. Read per chunk, a million-key snapshot (24 MB) was read again for every
        chunk of 32k changed rows."""
        if self._missing or self.engine.dialect.name != "sqlite":
            return None
        with self.engine.connect() as conn:
            snap = _read_snapshot(conn, obj)
        if snap is None:
            return None
        return StateIndex(snap[:, 0], snap[:, 1], np.zeros(len(snap), bool))

    def lookup(self, obj: str, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, row_hash)`` for a few keys (incremental runs), without loading the whole object."""
        found = np.zeros(len(key_hashes), bool)
        hashes = np.zeros(len(key_hashes), np.int64)
        if self._missing or len(key_hashes) == 0:
            return found, hashes
        table = self.lookup_index(obj)
        if table is not None:  # one read, then a binary search
            return table.lookup(np.asarray(key_hashes, dtype=np.int64))
        with self.engine.connect() as conn:
            confirmed = self._legacy_row_hashes(conn, obj, np.unique(key_hashes).tolist())
            for block in self._blocks(conn, obj, ("key_hash", "row_hash"), key_hashes):
                confirmed.update(blocks.pairs(block))
        for i, k in enumerate(key_hashes.tolist()):
            r = confirmed.get(k)
            if r is not None:
                found[i] = True
                hashes[i] = r
        return found, hashes

    def _legacy_row_hashes(self, conn: sa.Connection, obj: str, uniq: list[int]) -> dict[int, int]:
        """Key hash -> row hash of the ``state`` rows of these key hashes."""
        confirmed: dict[int, int] = {}
        if self.engine.dialect.name == "sqlite":  # the driver directly: no per-row SQLAlchemy work
            raw = conn.connection.driver_connection
            assert raw is not None
            batch = min(5000, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 1)  # fewer, larger probes
            for i in range(0, len(uniq), batch):
                part = uniq[i : i + batch]
                marks = ", ".join("?" * len(part))
                sql = f"SELECT key_hash, row_hash FROM connectif_sync_state WHERE object = ? AND key_hash IN ({marks})"
                confirmed.update(raw.execute(sql, [obj, *part]).fetchall())
            return confirmed
        for i in range(0, len(uniq), _LOOKUP_BATCH):
            part = uniq[i : i + _LOOKUP_BATCH]
            q = sa.select(state_table.c.key_hash, state_table.c.row_hash).where(
                state_table.c.object == obj, state_table.c.key_hash.in_(part)
            )
            confirmed.update({int(k): int(r) for k, r in conn.execute(q)})
        return confirmed

    def keys_for(self, obj: str, key_hashes: Iterable[int], limit: int | None = None) -> list[str]:
        """The keys behind some key hashes (to report deletions by name)."""
        wanted = list(key_hashes)[: limit if limit is not None else None]
        out: set[str] = set()
        if self._missing or not wanted:
            return []
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), _LOOKUP_BATCH):
                q = sa.select(state_table.c.key).where(
                    state_table.c.object == obj, state_table.c.key_hash.in_(wanted[i : i + _LOOKUP_BATCH])
                )
                out.update(r[0] for r in conn.execute(q))
            for block in self._blocks(conn, obj, ("key_hash", "key"), np.asarray(wanted, dtype=np.int64)):
                out.update(block.column("key").to_pylist())
        return sorted(out)

    def confirmed(self, obj: str) -> dict[str, int]:
        """Every confirmed key of ``obj`` with its row hash (for tests and small objects)."""
        if self._missing:
            return {}
        with self.engine.connect() as conn:
            q = sa.select(state_table.c.key, state_table.c.row_hash).where(state_table.c.object == obj)
            out = {k: int(h) for k, h in conn.execute(q)}
            for block in self._blocks(conn, obj, ("key", "row_hash")):
                out.update(blocks.pairs(block))
        return out

    def has_confirmed(self, obj: str) -> bool:
        """Whether ``obj`` has confirmed keys, known without reading them (SQLite: the snapshot's row count):
        a full scan starts its probe's pages before it loads them, which would be wasted on a first run."""
        if self._missing:
            return False
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                try:
                    rows = conn.execute(
                        sa.select(snapshots_table.c.rows).where(snapshots_table.c.object == obj)
                    ).scalar()
                except sa.exc.OperationalError:  # a store created before snapshots, opened read-only
                    rows = None
                if rows is not None:
                    return bool(rows)
            q = sa.select(sa.literal(1)).select_from(state_table).where(state_table.c.object == obj).limit(1)
            return conn.execute(q).first() is not None or (not self._no_blocks and blocks.sizes(conn, obj)[0] > 0)

    def count(self, obj: str) -> int:
        """How many keys of ``obj`` Connectif has confirmed."""
        if self._missing:
            return 0
        with self.engine.connect() as conn:
            if self._no_blocks or blocks.sizes(conn, obj)[0] == 0:
                q = sa.select(sa.func.count()).select_from(state_table).where(state_table.c.object == obj)
                return int(conn.execute(q).scalar_one())
            return len(self._hashes(conn, obj))

    def empty_masks(self, obj: str, key_hashes: Iterable[int]) -> dict[int, int | None]:
        """Key hash -> the confirmed row's empty-field mask (None: confirmed before masks were kept) for the
        given keys that are confirmed."""
        wanted = sorted({int(h) for h in key_hashes})
        out: dict[int, int | None] = {}
        if self._missing or not wanted:
            return out
        with self.engine.connect() as conn:
            try:
                for i in range(0, len(wanted), _LOOKUP_BATCH):
                    q = sa.select(state_table.c.key_hash, state_table.c.empty_mask).where(
                        state_table.c.object == obj, state_table.c.key_hash.in_(wanted[i : i + _LOOKUP_BATCH])
                    )
                    out.update({int(k): (None if m is None else int(m)) for k, m in conn.execute(q)})
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before masks, read-only
                return {h: None for h in wanted}
            for block in self._blocks(conn, obj, ("key_hash", "empty_mask"), np.asarray(wanted, dtype=np.int64)):
                out.update(blocks.pairs(block))
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
    """The object's snapshot as an ``(n, 3)`` int64 array sorted by key hash, or None when there is none.
    Read-only: a view of the bytes read (no copy: 24 MB per million keys less at the peak)."""
    try:
        row = conn.execute(
            sa.select(snapshots_table.c.rows, snapshots_table.c.data).where(snapshots_table.c.object == obj)
        ).first()
    except sa.exc.OperationalError:  # a store created before snapshots, opened read-only
        return None
    if row is None:
        return None
    arr = np.frombuffer(row.data, dtype="<i8").reshape(-1, 3)
    if len(arr) != row.rows:
        return None
    return arr


def _write_snapshot(conn: sa.Connection, obj: str, merged: np.ndarray) -> None:
    """Replace the snapshot of ``obj`` by ``merged`` (``(n, 3)``, sorted by key hash), in the caller's
    transaction: the confirmation that changed the state rewrites it, so it never lags.

    Cost: each confirmation rewrites the whole snapshot (24 bytes per confirmed key, 24 MB per million), a
    fraction of a second, against seconds saved by every full scan that reads it.
    """
    conn.execute(snapshots_table.delete().where(snapshots_table.c.object == obj))
    flat = np.ascontiguousarray(merged, dtype="<i8").reshape(-1).view(np.uint8)
    data = flat.data if conn.dialect.name == "sqlite" else flat.tobytes()  # SQLite binds the buffer: no copy
    conn.execute(snapshots_table.insert().values(object=obj, rows=len(merged), data=data, updated_at=_now()))
