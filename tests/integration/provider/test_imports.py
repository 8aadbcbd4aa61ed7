"""The provider against the running emulator (real HTTP): imports end to end, retries, queue limits, faults."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from airflow.sdk.exceptions import TaskDeferred

from connectif_provider.exceptions import ConnectifError, ConnectifImportFailedError
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.operators.connectif import ConnectifImportOperator
from connectif_provider.triggers.connectif import ConnectifImportTrigger, ConnectifQueueSlotTrigger
from emulator.testing import RunningEmulator
from tests.fixtures.provider import DictStore, run_deferred, run_trigger


def write_contacts(path: Path, n: int, bad_lines: tuple[int, ...] = ()) -> Path:
    lines = ["_email,_name,_points"]
    for i in range(1, n + 1):
        email = "not-an-email" if i in bad_lines else f"user{i}@example.com"
        lines.append(f"{email},User {i},{i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def info_logs() -> Iterator[list[dict[str, Any]]]:
    """Capture structlog events at INFO (the test session logs at WARNING)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


def test_import_with_row_errors_returns_rejected_lines(
    emu_conn: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    csv_path = write_contacts(tmp_path / "chunk-0001.csv", 6, bad_lines=(2, 5))
    op = ConnectifImportOperator(
        task_id="imp", file_path=str(csv_path), import_type="contacts", connectif_conn_id=emu_conn, poll_interval=0.2
    )
    store = DictStore()
    summary = run_deferred(op, {"task_state_store": store})
    assert summary["import_id"] == store.data["connectif_import"]["import_id"]
    assert (summary["status"], summary["total"], summary["success"], summary["errors"]) == ("finished", 6, 4, 2)
    assert [r["line"] for r in summary["rejected_rows"]] == [2, 5]
    assert all(r["field"] == "_email" and r["error"] for r in summary["rejected_rows"])
    assert summary["file_path"] == str(csv_path)
    assert len(emulator.admin.contacts()) == 4


def test_expired_error_report_link_is_minted_afresh(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    """The event that carried ``errorReportFileUrl`` may be old: an expired link is replaced by a fresh GET."""
    hook = ConnectifHook(emu_conn)
    csv_path = write_contacts(tmp_path / "chunk-0001.csv", 4, bad_lines=(3,))
    import_id = str(hook.create_import(str(csv_path), "contacts")["id"])
    emulator.admin.wait_import(import_id)
    emulator.admin.configure(presigned_url_ttl_s=0.001)
    stale = str(hook.get_import(import_id)["errorReportFileUrl"])
    time.sleep(1.1)
    with pytest.raises(ConnectifError):
        hook.download_error_report(stale)
    emulator.admin.configure(presigned_url_ttl_s=600)
    rows = hook.download_error_report(stale, import_id=import_id)
    assert [(r["line"], r["field"]) for r in rows] == [(3, "_email")]


def test_non_deferrable_mode(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    csv_path = write_contacts(tmp_path / "c.csv", 3)
    op = ConnectifImportOperator(
        task_id="imp",
        file_path=str(csv_path),
        import_type="contacts",
        connectif_conn_id=emu_conn,
        poll_interval=0.1,
        deferrable=False,
    )
    summary = op.execute({"task_state_store": DictStore()})
    assert summary["success"] == 3


def test_retry_after_upload_reattaches(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.admin.configure(import_rows_per_s=20)  # slow enough that the first try is still waiting
    csv_path = write_contacts(tmp_path / "c.csv", 20)
    store = DictStore()
    kwargs = {"file_path": str(csv_path), "import_type": "contacts", "connectif_conn_id": emu_conn}
    first = ConnectifImportOperator(task_id="imp", poll_interval=0.2, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TaskDeferred) as deferred:
        first.execute({"task_state_store": store})
    import_id = store.data["connectif_import"]["import_id"]
    assert deferred.value.trigger.job_ids == [import_id]
    # the worker died while deferred: the retry must not upload again
    retry = ConnectifImportOperator(task_id="imp", poll_interval=0.2, **kwargs)  # type: ignore[arg-type]
    summary = run_deferred(retry, {"task_state_store": store})
    assert summary["import_id"] == import_id
    assert summary["success"] == 20
    assert len(emulator.admin.imports()) == 1
    # and a retry after it finished returns the same summary without any upload
    again = ConnectifImportOperator(task_id="imp", poll_interval=0.2, **kwargs)  # type: ignore[arg-type]
    assert again.execute({"task_state_store": store})["import_id"] == import_id
    assert len(emulator.admin.imports()) == 1


def test_import_ending_in_error_fails_clearly(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.admin.faults(fail_next_imports=1)
    csv_path = write_contacts(tmp_path / "c.csv", 3)
    op = ConnectifImportOperator(
        task_id="imp", file_path=str(csv_path), import_type="contacts", connectif_conn_id=emu_conn, poll_interval=0.2
    )
    with pytest.raises(ConnectifImportFailedError, match="error"):
        run_deferred(op, {"task_state_store": DictStore()})


def test_twelve_parallel_imports_never_surface_e0401(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.admin.configure(import_rows_per_s=10)
    files = [write_contacts(tmp_path / f"c{i:02d}.csv", 15) for i in range(12)]  # ~1.5 s each, one at a time

    def one(path: Path) -> dict[str, Any]:
        op = ConnectifImportOperator(
            task_id=f"imp_{path.stem}",
            file_path=str(path),
            import_type="contacts",
            connectif_conn_id=emu_conn,
            poll_interval=0.2,
            max_poll_interval=0.5,
        )
        return dict(run_deferred(op, {"task_state_store": DictStore()}, max_rounds=50))

    with ThreadPoolExecutor(max_workers=12) as pool:
        summaries = list(pool.map(one, files))
    assert all(s["status"] == "finished" and s["success"] == 15 for s in summaries)
    assert len({s["import_id"] for s in summaries}) == 12
    stats = emulator.admin.stats()
    assert stats["maxQueuedImports"] == 10  # the queue did fill up: two uploads met E0401 and waited
    assert len(emulator.admin.imports()) == 12


def test_full_queue_defers_on_a_slot_trigger(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.admin.configure(max_queued_imports=1, import_rows_per_s=10)
    hook = ConnectifHook(emu_conn)
    hook.create_import(write_contacts(tmp_path / "first.csv", 40), "contacts")  # busy for ~4 s
    op = ConnectifImportOperator(
        task_id="imp",
        file_path=str(write_contacts(tmp_path / "second.csv", 2)),
        import_type="contacts",
        connectif_conn_id=emu_conn,
        poll_interval=0.2,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"task_state_store": DictStore()})
    assert isinstance(deferred.value.trigger, ConnectifQueueSlotTrigger)
    assert deferred.value.method_name == "execute_after_slot"
    summary = run_deferred(op, {"task_state_store": DictStore()}, max_rounds=20)
    assert summary["success"] == 2


@pytest.mark.parametrize(
    "faults",
    [
        {"storm_seconds": 1.5},
        {"error_rate": 0.3, "seed": 7},
        {"drop_rate": 0.3, "seed": 11},
        {"drop_rate": 0.3, "drop_after_processing": True, "seed": 5},
    ],
    ids=["429-storm", "5xx", "dropped", "dropped-after-processing"],
)
def test_faults_end_in_success_with_one_import(
    emu_conn: str, emulator: RunningEmulator, tmp_path: Path, faults: dict[str, Any]
) -> None:
    emulator.admin.configure(rate_limit_window_s=2)  # a 429's Retry-After lasts until the window turns
    emulator.admin.faults(**faults)
    csv_path = write_contacts(tmp_path / "c.csv", 5)
    op = ConnectifImportOperator(
        task_id="imp", file_path=str(csv_path), import_type="contacts", connectif_conn_id=emu_conn, poll_interval=0.2
    )
    summary = run_deferred(op, {"task_state_store": DictStore()}, max_rounds=5)
    assert summary["success"] == 5
    emulator.admin.faults()
    assert len(emulator.admin.imports()) == 1


def test_429_storm_without_retry_after_header(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    """The [assumed] alternative: a 429 with no Retry-After; the client waits for X-RateLimit-Reset."""
    emulator.admin.configure(rate_limit_window_s=2, retry_after_header=False)
    emulator.admin.faults(storm_seconds=1.5)
    op = ConnectifImportOperator(
        task_id="imp",
        file_path=str(write_contacts(tmp_path / "c.csv", 4)),
        import_type="contacts",
        connectif_conn_id=emu_conn,
        poll_interval=0.2,
    )
    assert run_deferred(op, {"task_state_store": DictStore()})["success"] == 4
    assert emulator.admin.stats()["rateLimited"] > 0
    assert len(emulator.admin.imports()) == 1


def test_upload_answer_lost_is_reconciled_not_repeated(
    emu_conn: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    """The upload reaches Connectif but its answer is lost: the import list tells the hook it exists."""
    from connectif_provider.exceptions import ConnectifTransportError

    hook = ConnectifHook(emu_conn)
    real_send = hook._send_once
    lost = []

    def send(method: str, url: str, **kwargs: Any) -> Any:
        response = real_send(method, url, **kwargs)
        if method == "POST" and not lost:
            lost.append(response.json()["id"])
            err = ConnectifTransportError("connection dropped after sending")
            err.body = {"outcome_unknown": True}
            raise err
        return response

    hook._send_once = send  # type: ignore[method-assign]
    created = hook.create_import(write_contacts(tmp_path / "c.csv", 3), "contacts")
    assert created["id"] == lost[0]
    assert [i["id"] for i in emulator.admin.imports()] == lost


def test_trigger_progress_log_and_backoff_while_queued(
    emu_conn: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.admin.configure(import_rows_per_s=10)
    hook = ConnectifHook(emu_conn)
    first = hook.create_import(write_contacts(tmp_path / "a.csv", 30), "contacts")  # ~3 s each
    second = hook.create_import(write_contacts(tmp_path / "b.csv", 30), "contacts")
    trigger = ConnectifImportTrigger(
        import_ids=[second["id"]], connectif_conn_id=emu_conn, poll_interval=0.3, deadline=time.time() + 60
    )
    with info_logs() as logs:
        event = run_trigger(trigger)
    assert event["status"] == "success"
    messages = [str(entry["event"]) for entry in logs]
    assert any("queued behind others" in m for m in messages)
    assert f"Import {second['id']} completed 30 of 30 (100.0%)" in messages
    queued_waits = [float(m.rsplit("next poll in ", 1)[1].split()[0]) for m in messages if "next poll in" in m]
    assert queued_waits == sorted(queued_waits)  # the interval grows while queued
    assert hook.get_import(first["id"])["status"] == "finished"


def test_trigger_timeout_event(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.admin.configure(import_rows_per_s=1)
    created = ConnectifHook(emu_conn).create_import(write_contacts(tmp_path / "a.csv", 50), "contacts")
    trigger = ConnectifImportTrigger(
        import_ids=[created["id"]], connectif_conn_id=emu_conn, poll_interval=0.2, deadline=time.time() + 1
    )
    event = run_trigger(trigger)
    assert event["status"] == "timeout"
