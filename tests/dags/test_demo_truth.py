"""The demo tells the truth: why a try failed (from Airflow's structured task log), and which component is
down (health answers over time, with a grace period for late heartbeats)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from structlog.tracebacks import ExceptionDictTransformer

from demo.retries import MAX_REASON, failure_reason, scheduler_reason
from demo.watchdog import Watchdog


def locked_database_error(tmp_path: Path) -> BaseException:
    """A real ``database is locked`` (SQLAlchemy wrapping sqlite3), as the issue's erasure task hit it."""
    path = tmp_path / "erp.sqlite"
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.commit()
    holder.execute("BEGIN IMMEDIATE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    except sa.exc.OperationalError as exc:
        return exc
    finally:
        engine.dispose()
        holder.close()
    raise AssertionError("the insert should have found the database locked")


def test_failure_reason_is_the_exception_of_the_structured_log(tmp_path: Path) -> None:
    exc = locked_database_error(tmp_path)
    entries: list[Any] = [
        {"event": "Connectif sync summary", "level": "info"},
        {  # what the task supervisor writes when the task raises (structlog's dict tracebacks)
            "event": "Task failed with exception",
            "level": "error",
            "error_detail": ExceptionDictTransformer()((type(exc), exc, exc.__traceback__)),
        },
        {"event": "Task instance is in running state", "level": "info"},
    ]
    reason = failure_reason(entries)
    assert reason is not None
    assert reason.startswith("OperationalError: (sqlite3.OperationalError) database is locked")
    assert len(reason) <= MAX_REASON


def test_failure_reason_falls_back_to_error_events_then_plain_lines() -> None:
    assert failure_reason([{"event": "Process exited abnormally", "level": "error"}]) == "Process exited abnormally"
    assert failure_reason(["starting", "ValueError: bad row 42", "done"]) == "ValueError: bad row 42"
    assert failure_reason([{"event": "fine", "level": "info"}, "all good"]) is None


#: Lines of ``airflow standalone``'s log from a demo on a busy machine: a mapped import whose first try failed
#: before its code ran (its task log is empty), as the scheduler reported it.
STANDALONE_LOG = (
    "scheduler  | 2026-12-06T09:07:10.259140Z [error    ] Executor LocalExecutor(parallelism=16) reported"
    " that the task instance <TaskInstance: connectif_coupons.import_codes manual__2026-12-06T09:06:02.32"
    "0858+00:00 map_index=0 [queued] ti_id=01a24a9a-6681-7b53-bbf1-ed5f6466b8ea> finished with state succ"
    "ess, but the task instance's state attribute is queued. Learn more: https://airflow.apache.org/docs/"
    "apache-airflow/stable/troubleshooting.html#task-state-changed-externally [airflow.task] loc=taskinst"
    "ance.py:1878"
    "\n"
    "scheduler  | 2026-12-06T09:07:11.1Z [info     ] unrelated line\n"
    "scheduler  | 2026-12-06T09:07:11.527129Z [info     ] Received executor event with state failed for t"
    "ask instance TaskInstanceKey(dag_id='connectif_coupons', task_id='import_codes', run_id='manual__202"
    "6-12-06T09:06:02.320858+00:00', try_number=1, map_index=0) [airflow.jobs.scheduler_job_runner.Schedu"
    "lerJobRunner] loc=scheduler_job_runner.py:1347"
    "\n"
)


def test_scheduler_reason_of_a_try_without_a_task_log(tmp_path: Path) -> None:
    log = tmp_path / "standalone.log"
    log.write_text(STANDALONE_LOG)
    run = "manual__2026-12-06T09:06:02.320858+00:00"

    reason = scheduler_reason(log, "connectif_coupons", run, "import_codes", 1, 0)

    assert reason is not None
    assert reason.startswith("the scheduler says: Executor LocalExecutor(parallelism=16) reported that the task ")
    assert "state attribute is queued" in reason and "<TaskInstance" not in reason
    assert scheduler_reason(log, "connectif_coupons", run, "import_codes", 2, 0) is None  # no such try
    assert scheduler_reason(log, "connectif_coupons", run, "import_codes", 1, 1) is None  # another mapped index
    assert scheduler_reason(tmp_path / "missing.log", "connectif_coupons", run, "import_codes", 1, 0) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def health(scheduler: str = "healthy") -> dict[str, Any]:
    beat = {"latest_scheduler_heartbeat": "2026-12-06T09:00:00+00:00"}
    return {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": scheduler, **beat},
        "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "2026-12-06T09:00:01+00:00"},
        "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-12-06T09:00:02+00:00"},
    }


def test_watchdog_reports_a_dead_scheduler_after_the_grace_period_and_its_recovery() -> None:
    answers: dict[str, Any] = {"health": health(), "emulator": 200}
    said: list[str] = []
    clock = Clock()

    def get(url: str) -> httpx.Response:
        if url.endswith("/_emulator/health"):
            if isinstance(answers["emulator"], Exception):
                raise answers["emulator"]
            return httpx.Response(answers["emulator"], json={"status": "ok"})
        return httpx.Response(200, json=answers["health"])

    dog = Watchdog("http://af", emulator_url="http://emu", grace=60, say=said.append, clock=clock, http_get=get)
    assert dog.check() == {}

    answers["health"] = health("unhealthy")
    clock.now = 10
    assert dog.check() == {}  # a late heartbeat is not a dead scheduler yet
    clock.now = 75
    down = dog.check()
    assert list(down) == ["scheduler"]
    assert "latest heartbeat 2026-12-06T09:00:00" in down["scheduler"]
    loud = "\n".join(said)
    assert "SCHEDULER IS DOWN" in loud and "does not restart it" in loud
    said.clear()
    clock.now = 80
    assert list(dog.check()) == ["scheduler"]
    assert said == []  # said once, not at every poll

    answers["health"] = health()
    clock.now = 85
    assert dog.check() == {}
    assert said == ["✓ scheduler is healthy again"]


def test_watchdog_reports_a_dead_emulator_and_database() -> None:
    said: list[str] = []
    clock = Clock()
    alive = {"db": True}

    def get(url: str) -> httpx.Response:
        if url.endswith("/_emulator/health"):
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=health())

    dog = Watchdog(
        "http://af", emulator_url="http://emu", database_alive=lambda: alive["db"], grace=0,
        say=said.append, clock=clock, http_get=get,
    )  # fmt: skip
    alive["db"] = False
    down = dog.check()
    assert set(down) == {"emulator", "postgresql"}
    assert "EMULATOR IS DOWN: not answering (ConnectError)" in "\n".join(said)
    assert "POSTGRESQL IS DOWN" in "\n".join(said)


@pytest.mark.parametrize("status", [500, 503])
def test_watchdog_an_api_server_that_errors_is_down(status: int) -> None:
    dog = Watchdog("http://af", grace=0, say=lambda _: None, http_get=lambda url: httpx.Response(status))
    assert dog.check() == {"api-server": f"HTTP {status}"}
