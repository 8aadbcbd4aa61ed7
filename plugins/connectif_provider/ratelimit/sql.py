"""The shared bucket in a SQL table (SQLAlchemy): a SQLite file for a standalone deployment, PostgreSQL when
workers run on several machines.

One small table with database-level locking (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on
PostgreSQL) covers both databases with one code path: count-then-take is atomic across processes.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from connectif_provider.ratelimit.common import USAGE_KEEP_MINUTES, RateLimitDecision, block_seconds

_metadata = MetaData()
tokens_table = Table(
    "connectif_rate_limit_tokens",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bucket", String(200), nullable=False),
    Column("taken_at", Float, nullable=False),
    Index("ix_connectif_rate_limit_tokens_bucket_taken_at", "bucket", "taken_at"),
)
buckets_table = Table(
    "connectif_rate_limit_buckets",
    _metadata,
    Column("bucket", String(200), primary_key=True),
    Column("blocked_until", Float, nullable=False, default=0.0),
)

#: Requests and 429 answers per bucket and minute, kept :data:`USAGE_KEEP_MINUTES` (the token log above only
#: holds the current window): the monitoring page charts the last hour from it.
usage_table = Table(
    "connectif_rate_limit_usage",
    _metadata,
    Column("bucket", String(200), primary_key=True),
    Column("minute", Integer, primary_key=True),  # unix time // 60
    Column("requests", Integer, nullable=False, default=0),
    Column("limited", Integer, nullable=False, default=0),
)

_USAGE_UPSERT = (
    "INSERT INTO connectif_rate_limit_usage (bucket, minute, requests, limited) VALUES (:b, :m, :r, :l) "
    "ON CONFLICT (bucket, minute) DO UPDATE SET requests = connectif_rate_limit_usage.requests + excluded.requests, "
    "limited = connectif_rate_limit_usage.limited + excluded.limited"
)

_engines: dict[tuple[str, int], Engine] = {}
_ready: set[tuple[str, int, str]] = set()
_engines_lock = threading.Lock()
_pruned: dict[str, int] = {}


def _engine(url: str) -> Engine:
    key = (url, os.getpid())  # never share pooled connections across a fork
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})
                _make_sqlite_transactions_exclusive(engine)
            else:
                engine = create_engine(url, poolclass=NullPool)
            _engines[key] = engine
        return engine


def _make_sqlite_transactions_exclusive(engine: Engine) -> None:
    """SQLite: take the write lock when the transaction begins, so count-then-insert is atomic across processes."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class SqlBucket:
    """A sliding-window log of token times in ``connectif_rate_limit_tokens``, serialised on the bucket's row."""

    def __init__(self, url: str, bucket: str, limit: int, window: float) -> None:
        self.url = url
        self.bucket = bucket
        self.limit = limit
        self.window = window

    # -- storage ----------------------------------------------------------------------------------------
    def _engine(self) -> Engine:
        engine = _engine(self.url)
        key = (self.url, os.getpid(), self.bucket)
        if key not in _ready:
            try:
                _metadata.create_all(engine, checkfirst=True)
            except DBAPIError:
                # Another process created the tables between the check and the CREATE (PostgreSQL answers
                # with a unique violation on pg_type); anything else shows up on the check below.
                _metadata.create_all(engine, checkfirst=True)
            try:
                with engine.begin() as conn:
                    exists = conn.execute(
                        select(buckets_table.c.bucket).where(buckets_table.c.bucket == self.bucket)
                    ).first()
                    if exists is None:
                        conn.execute(insert(buckets_table).values(bucket=self.bucket, blocked_until=0.0))
            except IntegrityError:
                pass  # another process created the row first
            _ready.add(key)
        return engine

    def _lock_bucket(self, conn: Connection) -> float:
        """Serialise on the bucket's row and return its ``blocked_until``."""
        query = select(buckets_table.c.blocked_until).where(buckets_table.c.bucket == self.bucket)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        row = conn.execute(query).first()
        return float(row[0]) if row is not None else 0.0

    def _count_tokens(self, conn: Connection, since: float) -> int:
        """Tokens of this bucket taken after ``since``."""
        return int(
            conn.execute(
                select(func.count())
                .select_from(tokens_table)
                .where(tokens_table.c.bucket == self.bucket, tokens_table.c.taken_at > since)
            ).scalar_one()
        )

    def _count_usage(self, conn: Connection, now: float, *, requests: int = 0, limited: int = 0) -> None:
        """Add to this minute's usage row (in the caller's transaction, which holds the bucket's lock)."""
        minute = int(now // 60)
        conn.execute(text(_USAGE_UPSERT), {"b": self.bucket, "m": minute, "r": requests, "l": limited})
        if _pruned.get(self.bucket) != minute:  # once a minute per process: forget minutes nobody charts
            conn.execute(
                delete(usage_table).where(
                    usage_table.c.bucket == self.bucket, usage_table.c.minute < minute - USAGE_KEEP_MINUTES
                )
            )
            _pruned[self.bucket] = minute

    # -- the bucket ------------------------------------------------------------------------------------
    def try_acquire(self) -> RateLimitDecision:
        """Take a token if the budget allows; otherwise say how long to wait. One short transaction."""
        with self._engine().begin() as conn:
            blocked_until = self._lock_bucket(conn)
            now = time.time()
            horizon = now - self.window
            conn.execute(
                delete(tokens_table).where(tokens_table.c.bucket == self.bucket, tokens_table.c.taken_at <= horizon)
            )
            in_window = self._count_tokens(conn, horizon)
            if blocked_until > now:
                return RateLimitDecision(wait=blocked_until - now, in_window=in_window)
            if in_window < self.limit:
                conn.execute(insert(tokens_table).values(bucket=self.bucket, taken_at=now))
                self._count_usage(conn, now, requests=1)
                return RateLimitDecision(wait=0.0, in_window=in_window + 1, taken_at=now)
            oldest_blocking = conn.execute(
                select(tokens_table.c.taken_at)
                .where(tokens_table.c.bucket == self.bucket)
                .order_by(tokens_table.c.taken_at)
                .offset(in_window - self.limit)
                .limit(1)
            ).scalar_one()
            return RateLimitDecision(wait=max(float(oldest_blocking) + self.window - now, 0.005), in_window=in_window)

    def block(self, retry_after: float | None, reset_at: float | None) -> None:
        """After a 429: no token for anyone until the server's window lets requests through again."""
        with self._engine().begin() as conn:
            blocked_until = self._lock_bucket(conn)
            now = time.time()
            until = now + block_seconds(now, retry_after, reset_at)
            if until > blocked_until:
                conn.execute(
                    update(buckets_table).where(buckets_table.c.bucket == self.bucket).values(blocked_until=until)
                )
            self._count_usage(conn, now, limited=1)

    def shrink(self, remaining: int, reset_at: float) -> int:
        """Lower the budget to what the server still grants until ``reset_at``; returns the tokens added."""
        with self._engine().begin() as conn:
            self._lock_bucket(conn)
            now = time.time()
            if reset_at <= now:
                return 0
            reset_at = min(reset_at, now + self.window)
            in_window = self._count_tokens(conn, now - self.window)
            deficit = (self.limit - in_window) - max(remaining, 0)
            if deficit > 0:
                # Phantom tokens that expire exactly at the server's reset: the budget shrinks to what the
                # server still grants, and comes back when its window turns over.
                stamp = reset_at - self.window
                conn.execute(insert(tokens_table), [{"bucket": self.bucket, "taken_at": stamp}] * deficit)
            return deficit

    def usage(self, first: int, last: int) -> dict[int, tuple[int, int]]:
        """``{minute: (requests, limited)}`` for the minutes from ``first`` on that saw any."""
        with self._engine().connect() as conn:
            rows = conn.execute(
                select(usage_table.c.minute, usage_table.c.requests, usage_table.c.limited).where(
                    usage_table.c.bucket == self.bucket, usage_table.c.minute >= first, usage_table.c.minute <= last
                )
            )
            return {int(m): (int(r), int(lim)) for m, r, lim in rows}

    def in_window(self) -> int:
        with self._engine().connect() as conn:
            return self._count_tokens(conn, time.time() - self.window)

    def reset(self) -> None:
        with self._engine().begin() as conn:
            conn.execute(delete(tokens_table).where(tokens_table.c.bucket == self.bucket))
            conn.execute(update(buckets_table).where(buckets_table.c.bucket == self.bucket).values(blocked_until=0.0))
