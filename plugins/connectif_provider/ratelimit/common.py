"""What the bucket backends and the waiting share: a decision, the usage record, the block rule.

Its own module so that :mod:`connectif_provider.ratelimit` (the waiting) imports the backends and the
backends import this, with no circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: Minutes of per-minute usage kept for the monitoring page's chart.
USAGE_KEEP_MINUTES = 180
#: A 429 never blocks the bucket for longer than this, whatever the server says.
MAX_BLOCK_SECONDS = 3600.0


@dataclass(frozen=True)
class RateLimitDecision:
    """Outcome of one attempt to take a token: ``wait`` is 0 when the token was taken."""

    wait: float
    in_window: int
    taken_at: float | None = None


@dataclass(frozen=True)
class MinuteUsage:
    """Requests the bucket granted and 429 answers the server gave in one minute (``minute`` = unix time // 60)."""

    minute: int
    requests: int
    limited: int


def block_seconds(now: float, retry_after: float | None, reset_at: float | None) -> float:
    """How long a 429 blocks the bucket: ``Retry-After``, else until ``X-RateLimit-Reset``, else 1 s (capped)."""
    if retry_after is not None:
        seconds = retry_after
    elif reset_at is not None and reset_at > now:
        seconds = reset_at - now
    else:
        seconds = 1.0
    return min(seconds, MAX_BLOCK_SECONDS)


class Bucket(Protocol):
    """One storage of the sliding-window log; every step is atomic where the bucket is kept."""

    def try_acquire(self) -> RateLimitDecision:
        """Take a token (and count it in this minute's usage) if the budget allows, else say how long to wait."""

    def block(self, retry_after: float | None, reset_at: float | None) -> None:
        """After a 429: refuse every token until the server lets requests through again; count the 429."""

    def shrink(self, remaining: int, reset_at: float) -> int:
        """Lower the budget to the server's ``remaining`` until ``reset_at``; returns the tokens added."""

    def usage(self, first: int, last: int) -> dict[int, tuple[int, int]]:
        """``{minute: (requests, limited)}`` of the minutes ``first..last`` that saw any."""

    def in_window(self) -> int:
        """Tokens taken in the current window."""

    def reset(self) -> None:
        """Forget every token and block of this bucket."""
