"""The account rate limit (fixed window) and the counters of what the emulator served.

Both are hit by many clients at once, so every update happens under one lock; they live in memory
(a restart starts a fresh window, as a real account's window would have moved on anyway).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    """Outcome of one request against the account's window."""

    allowed: bool
    limit: int
    remaining: int
    reset_epoch: float  # when the current window ends

    def headers(self, retry_after: bool) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_epoch)),
        }
        if not self.allowed and retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_epoch - time.time())))
        return headers


class RateLimiter:
    """A fixed window per account that opens with the account's first request after the previous one ended.

    Counts every authenticated request that reaches the account, allowed or not; also remembers the most
    requests any window saw (all, and allowed ones), which tells a test whether a client kept under the
    limit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, int]] = {}  # account -> (window start, seen, allowed)
        self.max_seen_in_window = 0
        self.max_allowed_in_window = 0

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self.max_seen_in_window = 0
            self.max_allowed_in_window = 0

    def hit(self, account: str, limit: int, window_s: float, force_reject: bool = False) -> Decision:
        now = time.time()
        with self._lock:
            start, seen, allowed = self._windows.get(account, (now, 0, 0))
            if now >= start + window_s:
                start, seen, allowed = now, 0, 0
            seen += 1
            ok = allowed < limit and not force_reject
            if ok:
                allowed += 1
            self._windows[account] = (start, seen, allowed)
            self.max_seen_in_window = max(self.max_seen_in_window, seen)
            self.max_allowed_in_window = max(self.max_allowed_in_window, allowed)
        return Decision(ok, limit, max(0, limit - allowed), start + window_s)


class Stats:
    """Counters exposed by ``GET /_emulator/stats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.statuses: Counter[str] = Counter()
            self.rate_limited = 0
            self.max_queued_imports = 0
            self.max_queued_exports = 0
            self.faults: Counter[str] = Counter()
            self.started = time.time()

    def count(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[endpoint] += 1
            self.statuses[str(status)] += 1
            if status == 429:
                self.rate_limited += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def saw_queue(self, imports: int | None = None, exports: int | None = None) -> None:
        with self._lock:
            if imports is not None:
                self.max_queued_imports = max(self.max_queued_imports, imports)
            if exports is not None:
                self.max_queued_exports = max(self.max_queued_exports, exports)

    def snapshot(self, limiter: RateLimiter) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "totalRequests": sum(self.requests.values()),
                "statuses": dict(self.statuses),
                "rateLimited": self.rate_limited,
                "maxQueuedImports": self.max_queued_imports,
                "maxQueuedExports": self.max_queued_exports,
                "maxRequestsInWindow": limiter.max_seen_in_window,
                "maxAllowedInWindow": limiter.max_allowed_in_window,
                "faults": dict(self.faults),
                "since": self.started,
            }
