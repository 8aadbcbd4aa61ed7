"""The one poll policy: the same sleeps, rounds and events for the triggerer and a worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest import mock

import pytest

from connectif_provider.exceptions import ConnectifNotFoundError, ConnectifServerError
from connectif_provider.models import JobKind
from connectif_provider.utils.polling import (
    JobsWatch,
    PollPolicy,
    QueueWatch,
    Round,
    apoll_until_done,
    default_max_poll_interval,
    poll_until_done,
)


def test_one_default_cap() -> None:
    assert [default_max_poll_interval(i) for i in (1, 30, 100, 900)] == [10, 300, 600, 900]
    assert PollPolicy(5).cap == 50 and PollPolicy(5, 7).cap == 7
    with pytest.raises(ValueError, match="poll_interval must be positive"):
        PollPolicy(0)


def _script(rounds: list[Any]) -> Any:
    answers = iter(rounds)

    def poll(interval: float) -> Round:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return poll


RUNNING, QUEUED, DONE = Round(running=True), Round(), Round(event={"status": "success"})


def test_sync_and_async_drivers_sleep_alike() -> None:
    rounds = [QUEUED, QUEUED, ConnectifServerError("503", status=503), RUNNING, QUEUED, DONE]
    sync_sleeps: list[float] = []
    with mock.patch("connectif_provider.utils.polling.time.sleep", side_effect=sync_sleeps.append):
        event = poll_until_done(PollPolicy(2, 4), _script(rounds), timeout_event=dict, error_event=lambda m: {})
    assert event == {"status": "success", "poll_rounds": 6}
    # first poll 1 s in; queued: x1.5 up to the cap; a transient failure repeats the interval; running resets it
    assert sync_sleeps == [1, 2, 3, 4, 2, 2]

    async_sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        async_sleeps.append(seconds)

    async def apoll(interval: float) -> Round:
        return poll(interval)

    poll = _script(rounds)
    with mock.patch("connectif_provider.utils.polling.asyncio.sleep", fake_sleep):
        aevent = asyncio.run(apoll_until_done(PollPolicy(2, 4), apoll, timeout_event=dict, error_event=lambda m: {}))
    assert (aevent, async_sleeps) == (event, sync_sleeps)


def test_an_api_error_ends_the_wait_and_the_deadline_is_kept() -> None:
    with mock.patch("connectif_provider.utils.polling.time.sleep"):
        event = poll_until_done(
            PollPolicy(1),
            _script([ConnectifNotFoundError("404", status=404)]),
            timeout_event=dict,
            error_event=lambda message: {"status": "error", "message": message},
        )
        assert event == {"status": "error", "message": "404"}
        late = poll_until_done(
            PollPolicy(1, deadline=time.time() - 1),
            _script([]),
            timeout_event=lambda: {"status": "timeout"},
            error_event=lambda m: {},
        )
    assert late == {"status": "timeout"}


def test_jobs_watch_events() -> None:
    watch = JobsWatch(JobKind.IMPORTS, ["a", "b"])
    watch.latest = {"a": {"id": "a", "status": "finished"}, "b": {"id": "b", "status": "queued"}}
    assert watch.pending() == ["b"]
    assert watch.assess(5) == Round(running=False)
    assert watch.timeout_event()["message"] == "Imports ['b'] were not finished at the deadline (b is still queued)"
    watch.latest["b"] = {"id": "b", "status": "cancelled"}
    assert watch.assess(5).event == {"status": "error", "message": "Import b is cancelled",
                                     "imports": list(watch.latest.values())}  # fmt: skip
    exports = JobsWatch(JobKind.EXPORTS, ["e"])
    exports.latest = {"e": {"id": "e", "status": "finished"}}
    assert exports.assess(5).event == {"status": "success", "exports": [{"id": "e", "status": "finished"}]}


def test_queue_watch() -> None:
    watch = QueueWatch(JobKind.EXPORTS, JobKind.EXPORTS.max_queued)
    assert watch.assess(5) == Round()
    assert watch.assess(4).event == {"status": "success", "active": 4}
