"""The distributed run stops everything it started when its scenario fails or when it receives SIGTERM.

These use the real services (the embedded PostgreSQL, redis-server, the emulator) but no Airflow, so they are
quick.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable

import pytest

from demo.processes import marked_processes
from deploy import distributed
from deploy.distributed import REPO, DistributedRunError, Stack, Timings


def run_scenario(monkeypatch: pytest.MonkeyPatch, body: Callable[[Stack], None]) -> tuple[int, Stack]:
    stacks: list[Stack] = []

    def scenario(stack: Stack, timings: Timings) -> list[str]:
        stacks.append(stack)
        assert {name for name, p in stack.processes.items() if p.alive()} == {"redis", "emulator"}
        assert stack.postgres is not None and stack.postgres.is_running()
        body(stack)
        return ["unreachable"]

    monkeypatch.setitem(distributed.SCENARIOS, "test", scenario)
    monkeypatch.setitem(distributed.DAGS_FOLDERS, "test", REPO / "dags")
    monkeypatch.setitem(distributed.EMULATOR_SPEED, "test", 0.0)
    code = distributed.run("test")
    (stack,) = stacks
    return code, stack


def assert_all_stopped(stack: Stack) -> None:
    assert not [name for name, p in stack.processes.items() if p.alive()]
    assert stack.postgres is not None and not stack.postgres.is_running()
    assert marked_processes(stack.marker) == []
    shutil.rmtree(stack.workdir)  # kept on failure for its logs


@pytest.mark.timeout(300)
def test_failing_scenario_stops_every_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(stack: Stack) -> None:
        raise DistributedRunError("failed on purpose")

    code, stack = run_scenario(monkeypatch, fail)

    assert code == 1
    assert "FAILED: failed on purpose" in capsys.readouterr().err
    assert_all_stopped(stack)


@pytest.mark.timeout(300)
def test_sigterm_stops_every_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def terminate(stack: Stack) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt the run")

    code, stack = run_scenario(monkeypatch, terminate)

    assert code == 128 + signal.SIGTERM
    assert "interrupted" in capsys.readouterr().err
    assert_all_stopped(stack)
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
