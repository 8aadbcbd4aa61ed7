"""The one poll policy for imports, exports and queue slots: the trigger, the hook's non-deferrable wait
and the sensor all follow it, so a wait behaves the same in the triggerer and on a worker.

The rule: the first poll comes ``FIRST_POLL_DELAY`` in (the operator has just created or read the job, and
a small import is often done within that second); while something is being processed the interval stays at
``poll_interval``; while everything only waits in Connectif's queue it grows by ``QUEUED_BACKOFF_FACTOR`` up
to ``max_poll_interval`` (each poll costs a request of the shared budget). A transient failure (5xx, 429,
dropped connection, after the hook's own retries) is logged and the poll repeated one interval later; any
other API error ends the wait. Nothing waits past ``deadline``.

The loop is written once (:class:`PollLoop`); :func:`poll_until_done` and :func:`apoll_until_done` only
drive it with ``time.sleep`` or ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectif_provider.exceptions import (
    ConnectifError,
    ConnectifRateLimitedError,
    ConnectifServerError,
    ConnectifTransportError,
)
from connectif_provider.models import EventStatus, JobKind, RemoteStatus

log = logging.getLogger(__name__)

#: Seconds between polls unless a task says otherwise.
DEFAULT_POLL_INTERVAL = 30.0
#: While a job waits in the queue behind others, the interval grows by this factor per poll.
QUEUED_BACKOFF_FACTOR = 1.5
#: Seconds before the first poll (or one interval, if shorter).
FIRST_POLL_DELAY = 1.0
#: The grown interval never passes this unless ``poll_interval`` itself is longer.
MAX_POLL_INTERVAL_CAP = 600.0
TRANSIENT_ERRORS = (ConnectifRateLimitedError, ConnectifServerError, ConnectifTransportError)

Event = dict[str, Any]
#: The statuses events carry, as plain strings (see :class:`EventStatus`).
SUCCESS, ERROR, TIMEOUT = EventStatus.SUCCESS.value, EventStatus.ERROR.value, EventStatus.TIMEOUT.value


def default_max_poll_interval(poll_interval: float) -> float:
    """The one default cap of the grown interval: 10x ``poll_interval``, at most 600 s (or ``poll_interval``)."""
    return min(poll_interval * 10, max(poll_interval, MAX_POLL_INTERVAL_CAP))


@dataclass(frozen=True)
class PollPolicy:
    """How often to poll and until when. ``max_poll_interval=None`` takes :func:`default_max_poll_interval`."""

    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_poll_interval: float | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval}")
        object.__setattr__(self, "poll_interval", float(self.poll_interval))
        cap = self.max_poll_interval or default_max_poll_interval(self.poll_interval)
        object.__setattr__(self, "max_poll_interval", float(cap))

    @property
    def cap(self) -> float:
        """The resolved ``max_poll_interval``."""
        return float(self.max_poll_interval or self.poll_interval)

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    def bounded(self, seconds: float) -> float:
        """``seconds``, shortened so that no sleep passes the deadline."""
        left = self.time_left()
        return max(0.0, min(seconds, left) if left is not None else seconds)


@dataclass(frozen=True)
class Round:
    """What one poll found: the final event, else whether work is being processed (not just queued)."""

    event: Event | None = None
    running: bool = False


class PollLoop:
    """The loop's state between polls, free of any I/O: the drivers below sleep what it says."""

    def __init__(self, policy: PollPolicy) -> None:
        self.policy = policy
        self.interval = policy.poll_interval
        self.rounds = 0  # reported in the event: a run's "API requests spent" counts them

    def first_sleep(self) -> float:
        return self.policy.bounded(min(self.policy.poll_interval, FIRST_POLL_DELAY))

    def expired(self) -> bool:
        left = self.policy.time_left()
        return left is not None and left <= 0

    def step(self, outcome: Round | ConnectifError, error_event: Callable[[str], Event]) -> Event | float:
        """After one poll (its round, or the API error it raised): the event that ends the wait, or the
        seconds to sleep before the next poll."""
        self.rounds += 1
        if isinstance(outcome, TRANSIENT_ERRORS):
            log.warning("Polling Connectif failed, will try again: %s", outcome)
            return self.policy.bounded(self.interval)
        if isinstance(outcome, ConnectifError):
            return error_event(str(outcome))
        if outcome.event is not None:
            return {**outcome.event, "poll_rounds": self.rounds}
        sleep = self.policy.bounded(self.policy.poll_interval if outcome.running else self.interval)
        if outcome.running:
            self.interval = self.policy.poll_interval
        else:
            self.interval = min(self.interval * QUEUED_BACKOFF_FACTOR, self.policy.cap)
        return sleep


def poll_until_done(
    policy: PollPolicy,
    poll: Callable[[float], Round],
    *,
    timeout_event: Callable[[], Event],
    error_event: Callable[[str], Event],
) -> Event:
    """Poll on this thread until ``poll`` returns an event or the deadline passes; return the event."""
    loop = PollLoop(policy)
    time.sleep(loop.first_sleep())
    while not loop.expired():
        try:
            outcome: Round | ConnectifError = poll(loop.interval)
        except ConnectifError as exc:
            outcome = exc
        if isinstance(after := loop.step(outcome, error_event), dict):
            return after
        time.sleep(after)
    return timeout_event()


async def apoll_until_done(
    policy: PollPolicy,
    poll: Callable[[float], Awaitable[Round]],
    *,
    timeout_event: Callable[[], Event],
    error_event: Callable[[str], Event],
) -> Event:
    """:func:`poll_until_done` for the triggerer: the same loop, sleeping without blocking the event loop."""
    loop = PollLoop(policy)
    await asyncio.sleep(loop.first_sleep())
    while not loop.expired():
        try:
            outcome: Round | ConnectifError = await poll(loop.interval)
        except ConnectifError as exc:
            outcome = exc
        if isinstance(after := loop.step(outcome, error_event), dict):
            return after
        await asyncio.sleep(after)
    return timeout_event()


# -- jobs (imports / exports): what one read of every job means -----------------------------------------
def progress_message(resource: dict[str, Any]) -> str:
    """``completed X of Y (Z%)`` from an import's success + errors over total."""
    done = int(resource.get("success") or 0) + int(resource.get("errors") or 0)
    total = int(resource.get("total") or 0)
    pct = (100.0 * done / total) if total else 0.0
    return f"completed {done} of {total} ({pct:.1f}%)"


@dataclass
class JobsWatch:
    """The latest read of each job of a wait, and the events it ends in (the same for trigger and hook).

    Events: ``{"status": "success", <kind>: [...]}`` in the order of ``job_ids`` when all are finished;
    ``{"status": "error", "message", <kind>}`` as soon as one fails (or cannot be read);
    ``{"status": "timeout", "message", <kind>}`` at the deadline.
    """

    kind: JobKind
    job_ids: list[str]
    logger: logging.Logger | logging.LoggerAdapter[Any] = log

    def __post_init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def _status(self, job_id: str) -> RemoteStatus:
        return self.kind.status_enum.parse(self.latest[job_id].get("status"))

    def pending(self) -> list[str]:
        """Jobs not yet read, or not finished at their last read: the next poll reads these only."""
        return [i for i in self.job_ids if i not in self.latest or not self._status(i).is_finished]

    def assess(self, interval: float) -> Round:
        """What the latest reads mean: an event when all finished or one failed, else running or queued."""
        statuses = {i: self._status(i) for i in self.latest}
        key = self.kind.value
        failed = [i for i, s in statuses.items() if s.is_failed]
        if failed:
            if self.kind is JobKind.IMPORTS:
                message = "Import " + ", ".join(f"{i} is {statuses[i].value}" for i in failed)
            else:
                message = f"Exports {failed} ended in error"
            return Round(event={"status": ERROR, "message": message, key: list(self.latest.values())})
        if all(s.is_finished for s in statuses.values()):
            if self.kind is JobKind.IMPORTS:
                for resource in self.latest.values():
                    self.logger.info("Import %s %s", resource.get("id"), progress_message(resource))
            return Round(event={"status": SUCCESS, key: [self.latest[i] for i in self.job_ids]})
        running = [i for i, s in statuses.items() if s.is_running]
        for job_id in running:
            self._log_running(job_id, self.latest[job_id])
        if not running and self.kind is JobKind.IMPORTS:
            self.logger.info("Imports %s queued behind others; next poll in %.0f s", self.pending(), interval)
        return Round(running=bool(running))

    def _log_running(self, job_id: str, resource: dict[str, Any]) -> None:
        if self.kind is JobKind.IMPORTS:
            self.logger.info("Import %s %s", job_id, progress_message(resource))
        else:
            self.logger.info("Export %s progress %s of %s", job_id, resource.get("progress"), resource.get("total"))

    def timeout_event(self) -> Event:
        key = self.kind.value
        pending = self.pending()
        message = f"{key.capitalize()} {pending} were not finished at the deadline"
        last = ", ".join(f"{i} is still {self.latest[i].get('status')}" for i in pending if i in self.latest)
        if last:
            message += f" ({last})"
        return {"status": TIMEOUT, "message": message, key: list(self.latest.values())}

    def error_event(self, message: str) -> Event:
        return {"status": ERROR, "message": message, self.kind.value: list(self.latest.values())}


@dataclass
class QueueWatch:
    """A wait for a free slot in the account's import (10) or export (5) queue, after E0401/E0301.

    Events: ``{"status": "success", "active": n}``, ``{"status": "timeout", "message"}``, or
    ``{"status": "error", "message"}``.
    """

    kind: JobKind
    limit: int
    logger: logging.Logger | logging.LoggerAdapter[Any] = log

    def assess(self, active: int) -> Round:
        if active < self.limit:
            return Round(event={"status": SUCCESS, "active": active})
        self.logger.info(
            "Connectif %s queue is full (%d of %d); waiting for a slot", self.kind.value, active, self.limit
        )
        return Round()

    def timeout_event(self) -> Event:
        return {"status": TIMEOUT, "message": f"No free Connectif {self.kind.value} slot before the deadline"}

    def error_event(self, message: str) -> Event:
        return {"status": ERROR, "message": message}
