"""The shared rate-limit bucket: budget per window, server feedback, several processes, non-blocking async."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from connectif_provider.ratelimit import SharedRateLimiter

REPO = Path(__file__).resolve().parents[3]


def _max_in_window(stamps: list[float], window: float) -> int:
    stamps = sorted(stamps)
    best = 0
    start = 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres), "redis"])
def backend_url(request: pytest.FixtureRequest, rate_limit_db: str) -> str:
    """Every backend: SQLite (standalone), PostgreSQL and Redis (distributed deployments)."""
    if request.param == "sqlite":
        return rate_limit_db
    if request.param == "redis":
        return str(request.getfixturevalue("rate_limit_redis_url"))
    return str(request.getfixturevalue("rate_limit_postgres_url"))


def test_budget_per_window(backend_url: str) -> None:
    limiter = SharedRateLimiter(backend_url, f"b1-{uuid.uuid4().hex[:6]}", limit=5, window=1.0)
    for _ in range(5):
        assert limiter.try_acquire().wait == 0
    decision = limiter.try_acquire()
    assert 0 < decision.wait <= 1.0
    started = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - started >= decision.wait - 0.05
    assert limiter.in_window() <= 5


def test_buckets_are_independent(rate_limit_db: str) -> None:
    a = SharedRateLimiter(rate_limit_db, "a", limit=1, window=30)
    b = SharedRateLimiter(rate_limit_db, "b", limit=1, window=30)
    assert a.try_acquire().wait == 0
    assert b.try_acquire().wait == 0
    assert a.try_acquire().wait > 0


def test_429_blocks_until_retry_after(backend_url: str) -> None:
    limiter = SharedRateLimiter(backend_url, f"b2-{uuid.uuid4().hex[:6]}", limit=100, window=60)
    limiter.record_server_state(limited=True, retry_after=20)
    assert 10 < limiter.try_acquire().wait <= 20
    limiter.record_server_state(limited=True, reset_at=time.time() + 40)  # no Retry-After: the reset
    assert 30 < limiter.try_acquire().wait <= 40


def test_server_remaining_shrinks_then_restores_budget(backend_url: str) -> None:
    limiter = SharedRateLimiter(backend_url, f"b3-{uuid.uuid4().hex[:6]}", limit=10, window=8.0)
    reset_at = time.time() + 3.0
    limiter.record_server_state(remaining=2, reset_at=reset_at)
    assert limiter.try_acquire().wait == 0
    assert limiter.try_acquire().wait == 0
    assert limiter.try_acquire().wait > 0  # the server's 2 are spent
    time.sleep(max(0.0, reset_at - time.time()) + 0.05)  # the server's window turned over
    assert limiter.try_acquire().wait == 0


def test_several_processes_share_one_budget(backend_url: str, tmp_path: Path) -> None:
    """4 processes hammering one bucket never exceed its budget in any window, and use most of it.

    The stamps are the tokens' own (taken inside the locked transaction), so the check is exact.
    """
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from connectif_provider.ratelimit import SharedRateLimiter
        limiter = SharedRateLimiter({backend_url!r}, "shared-{uuid.uuid4().hex[:6]}", limit=10, window=1.0)
        stamps = []
        end = time.time() + 3.0
        while time.time() < end:
            decision = limiter.try_acquire()
            if decision.taken_at is None:
                time.sleep(decision.wait)
            else:
                stamps.append(decision.taken_at)
        print(json.dumps(stamps))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO, text=True) for _ in range(4)
    ]
    stamps: list[float] = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            stamps.extend(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert _max_in_window(stamps, 1.0) <= 10
    assert len(stamps) > 10  # more than one window's worth: the bucket lets requests through


async def test_async_acquire_does_not_block_the_loop(rate_limit_db: str) -> None:
    limiter = SharedRateLimiter(rate_limit_db, "b4", limit=2, window=3.0)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    task = asyncio.create_task(ticker())
    try:
        for _ in range(3):  # the last one waits about 3 s for the window
            await limiter.aacquire()
    finally:
        task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 10
    assert max(gaps) < 1.5  # a blocked loop would show one gap of about 3 s


def test_usage_counts_requests_and_429s_per_minute(backend_url: str) -> None:
    """What the Connectif page charts: granted requests and 429 answers per minute, every minute present."""
    limiter = SharedRateLimiter(backend_url, f"u-{uuid.uuid4().hex[:6]}", limit=3, window=60)
    for _ in range(3):
        assert limiter.try_acquire().wait == 0
    assert limiter.try_acquire().wait > 0  # refused: not counted as a request
    limiter.record_server_state(limited=True, retry_after=0.01)
    limiter.record_server_state(limited=True, retry_after=0.01)
    usage = limiter.usage(60)
    assert (len(usage) == 60 and usage[-1].minute == int(time.time() // 60)) or usage[-1].minute + 1 == int(
        time.time() // 60
    )  # the minute may turn over between the calls
    assert sum(u.requests for u in usage) == 3 and sum(u.limited for u in usage) == 2
    assert [u.minute for u in usage] == list(range(usage[0].minute, usage[0].minute + 60))
