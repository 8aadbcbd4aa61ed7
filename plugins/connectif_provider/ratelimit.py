"""One request budget for the whole deployment, shared by every worker, machine and the triggerer.

The bucket is a sliding-window log kept where every component reaches it: a SQL table (SQLAlchemy: a
SQLite file for a standalone deployment, PostgreSQL when workers run on several machines) or a Redis
sorted set (``redis://``). Each request adds one entry stamped with its time; a request may go only while
fewer than ``limit`` entries are younger than ``window`` seconds.
A sliding window of ``limit`` also holds inside every fixed window of the server, so a budget below the
account's 100/minute never trips it.

The bucket also obeys the server: ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` lower the budget when
someone else (the Connectif app, another integration) spends the same account's requests, and a 429
blocks the whole bucket until ``Retry-After`` (else the reset time).

Why not pyrate-limiter: its SQLite bucket serialises with an in-process lock only (several worker
processes could overshoot), its PostgreSQL bucket needs psycopg_pool rather than SQLAlchemy, and none of
its buckets can absorb the server's remaining/reset headers. One small table with database-level locking
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL) covers both databases with one
code path; on Redis, two Lua scripts do the same check-and-take atomically, on the Redis server's clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
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

log = logging.getLogger(__name__)

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
USAGE_KEEP_MINUTES = 180

_USAGE_UPSERT = (
    "INSERT INTO connectif_rate_limit_usage (bucket, minute, requests, limited) VALUES (:b, :m, :r, :l) "
    "ON CONFLICT (bucket, minute) DO UPDATE SET requests = connectif_rate_limit_usage.requests + excluded.requests, "
    "limited = connectif_rate_limit_usage.limited + excluded.limited"
)


@dataclass(frozen=True)
class MinuteUsage:
    """Requests the bucket granted and 429 answers the server gave in one minute (``minute`` = unix time // 60)."""

    minute: int
    requests: int
    limited: int


#: A 429 never blocks the bucket for longer than this, whatever the server says.
MAX_BLOCK_SECONDS = 3600.0

_engines: dict[tuple[str, int], Engine] = {}
_ready: set[tuple[str, int, str]] = set()
_engines_lock = threading.Lock()
_pruned: dict[str, int] = {}


def default_backend_url() -> str:
    """A SQLite file in AIRFLOW_HOME: shared by every component of a standalone deployment."""
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return f"sqlite:///{home / 'connectif_rate_limit.db'}"


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


#: Both scripts start alike: the Redis server's clock (one clock for every machine) and the bucket's shape.
_LUA_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
"""

_ACQUIRE_LUA = _LUA_PRELUDE + """redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then
  return {tostring(blocked - now), count, '-1'}
end
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 60000)
  return {'0', count + 1, tostring(now)}
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {tostring(tonumber(oldest[2]) + window - now), count, '-1'}
"""

_FEEDBACK_LUA = _LUA_PRELUDE + """local mode = ARGV[3]
if mode == 'block' then
  local untilv = now + tonumber(ARGV[4])
  local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
  if untilv > blocked then
    redis.call('SET', KEYS[2], tostring(untilv), 'PX', math.ceil((untilv - now) * 1000) + 1000)
  end
  return 0
end
local remaining = tonumber(ARGV[4])
local reset_in = math.min(tonumber(ARGV[5]), window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local deficit = (limit - count) - math.max(remaining, 0)
for i = 1, deficit do
  redis.call('ZADD', KEYS[1], now + reset_in - window, ARGV[6] .. ':' .. i)
end
if deficit > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 60000)
end
return math.max(deficit, 0)
"""


class _RedisBucket:
    """The same bucket in Redis: a sorted set of token times and a key holding the block, on Redis's clock."""

    def __init__(self, url: str, bucket: str, limit: int, window: float) -> None:
        import redis

        self._client = redis.Redis.from_url(url)
        self._tokens = f"connectif:rate-limit:{bucket}:tokens"
        self._blocked = f"connectif:rate-limit:{bucket}:blocked"
        self._usage_prefix = f"connectif:rate-limit:{bucket}:usage"
        self._limit = limit
        self._window = window
        self._acquire = self._client.register_script(_ACQUIRE_LUA)
        self._feedback = self._client.register_script(_FEEDBACK_LUA)

    def try_acquire(self) -> RateLimitDecision:
        wait, count, stamp = self._acquire(
            keys=[self._tokens, self._blocked], args=[self._window, self._limit, uuid.uuid4().hex]
        )
        taken_at = float(stamp)
        return RateLimitDecision(wait=float(wait), in_window=int(count), taken_at=None if taken_at < 0 else taken_at)

    def block_for(self, seconds: float) -> None:
        self._feedback(keys=[self._tokens, self._blocked], args=[self._window, self._limit, "block", seconds])

    def shrink(self, remaining: int, reset_in: float) -> int:
        args: list[str | int | float] = [self._window, self._limit, "shrink", remaining, reset_in, uuid.uuid4().hex]
        return int(self._feedback(keys=[self._tokens, self._blocked], args=args))

    def in_window(self) -> int:
        now = time.time()
        return int(self._client.zcount(self._tokens, now - self._window, "+inf"))

    def _usage_key(self, minute: int) -> str:
        return f"{self._usage_prefix}:{minute}"

    def count_usage(self, *, requests: int = 0, limited: int = 0) -> None:
        key = self._usage_key(int(time.time() // 60))
        pipe = self._client.pipeline()
        if requests:
            pipe.hincrby(key, "requests", requests)
        if limited:
            pipe.hincrby(key, "limited", limited)
        pipe.expire(key, USAGE_KEEP_MINUTES * 60)
        pipe.execute()

    def usage(self, first: int, last: int) -> dict[int, tuple[int, int]]:
        pipe = self._client.pipeline()
        minutes = list(range(first, last + 1))
        for m in minutes:
            pipe.hgetall(self._usage_key(m))
        out: dict[int, tuple[int, int]] = {}
        for m, h in zip(minutes, pipe.execute(), strict=True):
            if h:
                out[m] = (int(h.get(b"requests", 0)), int(h.get(b"limited", 0)))
        return out

    def reset(self) -> None:
        self._client.delete(self._tokens, self._blocked)


def _block_seconds(now: float, retry_after: float | None, reset_at: float | None) -> float:
    """How long a 429 blocks the bucket: ``Retry-After``, else until ``X-RateLimit-Reset``, else 1 s (capped)."""
    if retry_after is not None:
        seconds = retry_after
    elif reset_at is not None and reset_at > now:
        seconds = reset_at - now
    else:
        seconds = 1.0
    return min(seconds, MAX_BLOCK_SECONDS)


@dataclass(frozen=True)
class RateLimitDecision:
    """Outcome of one attempt to take a token: ``wait`` is 0 when the token was taken."""

    wait: float
    in_window: int
    taken_at: float | None = None


class SharedRateLimiter:
    """A token bucket of ``limit`` requests per ``window`` seconds, named ``bucket``, stored at ``backend_url``."""

    def __init__(self, backend_url: str, bucket: str, limit: int, window: float = 60.0) -> None:
        if limit < 1:
            raise ValueError(f"rate limit must be at least 1 request per window, got {limit}")
        if window <= 0:
            raise ValueError(f"rate-limit window must be positive, got {window}")
        self.backend_url = backend_url
        self.bucket = bucket
        self.limit = int(limit)
        self.window = float(window)
        self._redis: _RedisBucket | None = None
        if backend_url.startswith(("redis://", "rediss://", "unix://")):
            self._redis = _RedisBucket(backend_url, bucket, self.limit, self.window)

    def __repr__(self) -> str:
        return f"SharedRateLimiter(bucket={self.bucket!r}, limit={self.limit}, window={self.window})"

    # -- storage ----------------------------------------------------------------------------------------
    def _engine(self) -> Engine:
        engine = _engine(self.backend_url)
        key = (self.backend_url, os.getpid(), self.bucket)
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

    def try_acquire(self) -> RateLimitDecision:
        """Take a token if the budget allows; otherwise say how long to wait. One short transaction."""
        if self._redis is not None:
            decision = self._redis.try_acquire()
            if decision.wait == 0:
                self._redis.count_usage(requests=1)
            return decision
        engine = self._engine()
        with engine.begin() as conn:
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

    def record_server_state(
        self,
        *,
        limited: bool = False,
        retry_after: float | None = None,
        remaining: int | None = None,
        reset_at: float | None = None,
    ) -> None:
        """Fold what the server said into the bucket (see the module docstring)."""
        if not limited and (remaining is None or reset_at is None):
            return
        if limited:
            if self._redis is not None:
                self._redis.block_for(_block_seconds(time.time(), retry_after, reset_at))
                self._redis.count_usage(limited=1)
            else:
                self._sql_block(retry_after, reset_at)
            return
        assert remaining is not None and reset_at is not None
        if self._redis is not None:
            now = time.time()
            deficit = self._redis.shrink(remaining, reset_at - now) if reset_at > now else 0
        else:
            deficit = self._sql_shrink(remaining, reset_at)
        if deficit > 0:
            log.info("Connectif reports %d requests left until reset; bucket lowered by %d", remaining, deficit)

    def _sql_block(self, retry_after: float | None, reset_at: float | None) -> None:
        """After a 429: no token for anyone until the server's window lets requests through again."""
        with self._engine().begin() as conn:
            blocked_until = self._lock_bucket(conn)
            now = time.time()
            until = now + _block_seconds(now, retry_after, reset_at)
            if until > blocked_until:
                conn.execute(
                    update(buckets_table).where(buckets_table.c.bucket == self.bucket).values(blocked_until=until)
                )
            self._count_usage(conn, now, limited=1)

    def _sql_shrink(self, remaining: int, reset_at: float) -> int:
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

    def usage(self, minutes: int = 60) -> list[MinuteUsage]:
        """Requests granted and 429 answers seen per minute over the last ``minutes`` (oldest first, every
        minute present, zeros included): what the monitoring page charts."""
        now_minute = int(time.time() // 60)
        first = now_minute - minutes + 1
        if self._redis is not None:
            seen = self._redis.usage(first, now_minute)
        else:
            with self._engine().connect() as conn:
                rows = conn.execute(
                    select(usage_table.c.minute, usage_table.c.requests, usage_table.c.limited).where(
                        usage_table.c.bucket == self.bucket, usage_table.c.minute >= first
                    )
                )
                seen = {int(m): (int(r), int(lim)) for m, r, lim in rows}
        return [MinuteUsage(m, *seen.get(m, (0, 0))) for m in range(first, now_minute + 1)]

    def _count_tokens(self, conn: Connection, since: float) -> int:
        """Tokens of this bucket taken after ``since``."""
        return int(
            conn.execute(
                select(func.count())
                .select_from(tokens_table)
                .where(tokens_table.c.bucket == self.bucket, tokens_table.c.taken_at > since)
            ).scalar_one()
        )

    def _pause(self, decision: RateLimitDecision, started: float, max_wait: float | None) -> float | None:
        """None when the token was taken, else how long to sleep before trying again (or TimeoutError)."""
        if decision.wait == 0:
            return None
        pause = decision.wait + random.uniform(0, 0.05)
        if max_wait is not None and time.monotonic() - started + pause > max_wait:
            raise TimeoutError(f"no Connectif request token within {max_wait:.0f} s (bucket {self.bucket!r})")
        return pause

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until a token is taken; return the seconds waited."""
        started = time.monotonic()
        while (pause := self._pause(self.try_acquire(), started, max_wait)) is not None:
            time.sleep(pause)
        return time.monotonic() - started

    async def aacquire(self, max_wait: float | None = None) -> float:
        """As :meth:`acquire`, with each database step in a thread so that the event loop never blocks."""
        started = time.monotonic()
        while (pause := self._pause(await asyncio.to_thread(self.try_acquire), started, max_wait)) is not None:
            await asyncio.sleep(pause)
        return time.monotonic() - started

    async def arecord_server_state(self, **kwargs: Any) -> None:
        await asyncio.to_thread(lambda: self.record_server_state(**kwargs))

    def in_window(self) -> int:
        """Tokens taken in the current window (for tests and the benchmark)."""
        if self._redis is not None:
            return self._redis.in_window()
        with self._engine().connect() as conn:
            return self._count_tokens(conn, time.time() - self.window)

    def reset(self) -> None:
        """Forget every token and block of this bucket (tests, or after changing the budget)."""
        if self._redis is not None:
            self._redis.reset()
            return
        engine = self._engine()
        with engine.begin() as conn:
            conn.execute(delete(tokens_table).where(tokens_table.c.bucket == self.bucket))
            conn.execute(update(buckets_table).where(buckets_table.c.bucket == self.bucket).values(blocked_until=0.0))
