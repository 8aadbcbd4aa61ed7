"""Writes in a thread of their own (:mod:`connectif_sync.background`): in order, bounded, errors raised in the
caller's thread and never lost."""

from __future__ import annotations

import threading
import time

import pytest

from connectif_sync.background import Serial


def test_calls_run_in_order_in_one_thread_of_their_own() -> None:
    done: list[tuple[int, str]] = []
    s = Serial("test-writes", ahead=2)
    assert s._thread is None  # nothing given yet: no thread
    for i in range(20):
        s.submit(lambda i=i: done.append((i, threading.current_thread().name)))
    s.close()
    assert done == [(i, "test-writes") for i in range(20)]
    s.submit(lambda: done.append((20, threading.current_thread().name)))  # usable again: a new thread
    s.close()
    assert done[-1] == (20, "test-writes")


def test_at_most_ahead_calls_wait_then_the_caller_does() -> None:
    release = threading.Event()
    s = Serial("test-writes", ahead=2)
    s.submit(release.wait)  # taken by the thread, which then waits
    time.sleep(0.05)
    s.submit(lambda: None)
    s.submit(lambda: None)  # two waiting: the queue is full
    blocked = threading.Thread(target=s.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # the caller waits for room rather than holding more
    release.set()
    blocked.join(5)
    assert not blocked.is_alive()
    s.close()


def test_a_failed_call_is_raised_by_the_next_submit_or_by_close_and_the_rest_is_dropped() -> None:
    done: list[int] = []

    def fail() -> None:
        raise OSError("disk full")

    s = Serial("test-writes", ahead=4)
    s.submit(fail)
    s.submit(lambda: done.append(1))  # queued behind the failure: dropped
    with pytest.raises(OSError, match="disk full"):
        s.close()
    assert done == []

    s = Serial("test-writes", ahead=4)
    s.submit(fail)
    time.sleep(0.1)  # the thread has run it
    with pytest.raises(OSError, match="disk full"):
        s.submit(lambda: done.append(2))
    s.submit(lambda: done.append(3))  # after a failure nothing more is written
    s.close()
    assert done == []

    quiet = Serial("test-writes", ahead=4)
    quiet.submit(fail)
    quiet.close(raise_error=False)  # a run that failed otherwise: its own error is the one raised


def test_inline_runs_each_call_in_the_callers_thread() -> None:
    names: list[str] = []
    s = Serial("test-writes", ahead=1, inline=True)
    s.submit(lambda: names.append(threading.current_thread().name))
    s.close()
    assert names == [threading.current_thread().name] and s._thread is None
