"""One request budget for the whole deployment, shared by every worker, machine and the triggerer.

The bucket is a sliding-window log kept where every component reaches it: a SQL table
(:mod:`~connectif_provider.ratelimit.sql`: a SQLite file for a standalone deployment, PostgreSQL when workers
run on several machines) or a Redis sorted set (:mod:`~connectif_provider.ratelimit.redis`, ``redis://``).
Each request adds one entry stamped with its time; a request may go only while fewer than ``limit`` entries
are younger than ``window`` seconds. A sliding window of ``limit`` also holds inside every fixed window of
the server, so a budget below the account's 100/minute never trips it.

The bucket also obeys the server: ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` lower the budget when
someone else (the Connectif app, another integration) spends the same account's requests, and a 429
blocks the whole bucket until ``Retry-After`` (else the reset time).

This module holds the waiting (sync and async) and picks the backend; each backend is one class.

Why not pyrate-limiter: its SQLite bucket serialises with an in-process lock only (several worker
processes could overshoot), its PostgreSQL bucket needs psycopg_pool rather than SQLAlchemy, and none of
its buckets can absorb the server's remaining/reset headers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from connectif_provider.ratelimit.common import (
    MAX_BLOCK_SECONDS,
    USAGE_KEEP_MINUTES,
    Bucket,
    MinuteUsage,
    RateLimitDecision,
    block_seconds,
)
from connectif_provider.ratelimit.redis import RedisBucket
from connectif_provider.ratelimit.sql import SqlBucket, buckets_table, tokens_table, usage_table

__all__ = [
    "MAX_BLOCK_SECONDS",
    "USAGE_KEEP_MINUTES",
    "Bucket",
    "MinuteUsage",
    "RateLimitDecision",
    "RedisBucket",
    "SharedRateLimiter",
    "SqlBucket",
    "block_seconds",
    "buckets_table",
    "default_backend_url",
    "tokens_table",
    "usage_table",
]

log = logging.getLogger(__name__)

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def default_backend_url() -> str:
    """A SQLite file in AIRFLOW_HOME: shared by every component of a standalone deployment."""
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return f"sqlite:///{home / 'connectif_rate_limit.db'}"


def open_bucket(backend_url: str, bucket: str, limit: int, window: float) -> Bucket:
    """The backend a URL names: Redis for ``redis://``/``rediss://``/``unix://``, else SQLAlchemy."""
    if backend_url.startswith(_REDIS_SCHEMES):
        return RedisBucket(backend_url, bucket, limit, window)
    return SqlBucket(backend_url, bucket, limit, window)


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
        self._store: Bucket = open_bucket(backend_url, bucket, self.limit, self.window)

    def __repr__(self) -> str:
        return f"SharedRateLimiter(bucket={self.bucket!r}, limit={self.limit}, window={self.window})"

    def try_acquire(self) -> RateLimitDecision:
        """Take a token if the budget allows; otherwise say how long to wait."""
        return self._store.try_acquire()

    def record_server_state(
        self,
        *,
        limited: bool = False,
        retry_after: float | None = None,
        remaining: int | None = None,
        reset_at: float | None = None,
    ) -> None:
        """Fold what the server said into the bucket (see the module docstring)."""
        if limited:
            self._store.block(retry_after, reset_at)
            return
        if remaining is None or reset_at is None:
            return
        deficit = self._store.shrink(remaining, reset_at)
        if deficit > 0:
            log.info("Connectif reports %d requests left until reset; bucket lowered by %d", remaining, deficit)

    def usage(self, minutes: int = 60) -> list[MinuteUsage]:
        """Requests granted and 429 answers seen per minute over the last ``minutes`` (oldest first, every
        minute present, zeros included): what the monitoring page charts."""
        now_minute = int(time.time() // 60)
        first = now_minute - minutes + 1
        seen = self._store.usage(first, now_minute)
        return [MinuteUsage(m, *seen.get(m, (0, 0))) for m in range(first, now_minute + 1)]

    # -- the waiting -------------------------------------------------------------------------------------
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
        return self._store.in_window()

    def reset(self) -> None:
        """Forget every token and block of this bucket (tests, or after changing the budget)."""
        self._store.reset()
