"""Operators and sensor with a mocked hook: deferral, re-attachment, queue-full waits, summaries, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from connectif_provider.exceptions import (
    ConnectifExportFailedError,
    ConnectifExportQueueFullError,
    ConnectifImportFailedError,
    ConnectifImportQueueFullError,
    ConnectifNotFoundError,
    ConnectifRowErrorsExceededError,
    ConnectifTimeoutError,
)
from connectif_provider.models import JobKind
from connectif_provider.operators.connectif import (
    ConnectifExportOperator,
    ConnectifImportOperator,
    split_date_range,
)
from connectif_provider.sensors.connectif import ConnectifImportSensor
from connectif_provider.triggers.connectif import (
    ConnectifJobTrigger,
    ConnectifQueueSlotTrigger,
)
from tests.fixtures.provider import DictStore

HOOK = "connectif_provider.hooks.connectif.ConnectifHook"


def _op(**kwargs: Any) -> ConnectifImportOperator:
    params: dict[str, Any] = {
        "task_id": "imp",
        "file_path": "/data/chunk-0001.csv",
        "import_type": "contacts",
        "connectif_conn_id": "c",
        "poll_interval": 5,
    }
    params.update(kwargs)
    return ConnectifImportOperator(**params)


def _imp(status: str = "queued", **fields: Any) -> dict[str, Any]:
    return {"id": "i1", "status": status, "total": 4, "success": 0, "errors": 0, **fields}


def test_upload_stores_id_then_defers() -> None:
    store = DictStore()
    with mock.patch(f"{HOOK}.create_import", return_value=_imp()) as create, pytest.raises(TaskDeferred) as info:
        _op().execute({"task_state_store": store})
    create.assert_called_once()
    assert create.call_args.args == ("/data/chunk-0001.csv", "contacts")
    saved = store.data["connectif_import"]
    assert {k: saved[k] for k in ("import_id", "file_path", "file")} == {
        "import_id": "i1", "file_path": "/data/chunk-0001.csv", "file": None,
    }
    assert saved["upload_started"] > 0  # the intent, recorded before the upload
    trigger = info.value.trigger
    assert isinstance(trigger, ConnectifJobTrigger) and trigger.kind is JobKind.IMPORTS and trigger.job_ids == ["i1"]
    assert info.value.method_name == "execute_complete"
    assert trigger.deadline is not None


def test_retry_reattaches_to_active_import_without_uploading() -> None:
    store = DictStore({"connectif_import": {"import_id": "i1", "file_path": "/data/chunk-0001.csv"}})
    with (
        mock.patch(f"{HOOK}.get_import", return_value=_imp("inProgress")),
        mock.patch(f"{HOOK}.create_import") as create,
        pytest.raises(TaskDeferred) as info,
    ):
        _op().execute({"task_state_store": store})
    create.assert_not_called()
    assert info.value.trigger.job_ids == ["i1"]


def test_retry_of_finished_import_returns_summary() -> None:
    store = DictStore({"connectif_import": {"import_id": "i1", "file_path": "/data/chunk-0001.csv"}})
    with (
        mock.patch(f"{HOOK}.get_import", return_value=_imp("finished", success=4)),
        mock.patch(f"{HOOK}.create_import") as create,
    ):
        summary = _op().execute({"task_state_store": store})
    create.assert_not_called()
    assert summary["success"] == 4 and summary["rejected_rows"] == []


@pytest.mark.parametrize(
    "stored_state",
    [
        {"connectif_import": {"import_id": "i1", "file_path": "/data/other.csv"}},  # another file
        {"connectif_import": {"import_id": "gone", "file_path": "/data/chunk-0001.csv"}},  # deleted
        {"connectif_import": {"import_id": "failed", "file_path": "/data/chunk-0001.csv"}},  # ended in error
    ],
)
def test_retry_uploads_again_when_the_earlier_import_is_unusable(stored_state: dict[str, Any]) -> None:
    def get(import_id: str) -> dict[str, Any]:
        if import_id == "gone":
            raise ConnectifNotFoundError("404", status=404)
        return _imp("error") if import_id == "failed" else _imp("inProgress")

    store = DictStore(stored_state)
    with (
        mock.patch(f"{HOOK}.get_import", side_effect=get),
        mock.patch(f"{HOOK}.create_import", return_value=_imp(id="i2")) as create,
        pytest.raises(TaskDeferred),
    ):
        _op().execute({"task_state_store": store})
    create.assert_called_once()
    assert store.data["connectif_import"]["import_id"] == "i2"


def test_rewritten_file_is_uploaded_again(tmp_path: Path) -> None:
    """A task cleared together with its upstream gets a new file at the same path: no stale re-attach."""
    path = tmp_path / "chunk.csv"
    path.write_text("_email\na@example.com\n")
    store = DictStore()
    with mock.patch(f"{HOOK}.create_import", return_value=_imp()), pytest.raises(TaskDeferred):
        _op(file_path=str(path)).execute({"task_state_store": store})
    assert store.data["connectif_import"]["file"]["size"] == path.stat().st_size
    with (
        mock.patch(f"{HOOK}.get_import", return_value=_imp("finished", success=1)),
        mock.patch(f"{HOOK}.create_import") as create,
    ):
        _op(file_path=str(path)).execute({"task_state_store": store})  # same file: the earlier import
    create.assert_not_called()
    path.write_text("_email\nb@example.com\nc@example.com\n")
    with (
        mock.patch(f"{HOOK}.get_import", return_value=_imp("finished", success=1)),
        mock.patch(f"{HOOK}.create_import", return_value=_imp(id="i2")) as create,
        pytest.raises(TaskDeferred),
    ):
        _op(file_path=str(path)).execute({"task_state_store": store})
    create.assert_called_once()


def test_full_queue_defers_until_a_slot_frees() -> None:
    full = ConnectifImportQueueFullError("E0401", status=400, code="E0401")
    with mock.patch(f"{HOOK}.create_import", side_effect=full), pytest.raises(TaskDeferred) as info:
        _op().execute({"task_state_store": DictStore()})
    trigger = info.value.trigger
    assert isinstance(trigger, ConnectifQueueSlotTrigger) and trigger.kind == "imports" and trigger.limit == 10
    assert info.value.method_name == "execute_after_slot"
    deadline = info.value.kwargs["deadline"]
    # resumed with a free slot: uploads and defers on the import
    with mock.patch(f"{HOOK}.create_import", return_value=_imp()), pytest.raises(TaskDeferred) as again:
        _op().execute_after_slot({"task_state_store": DictStore()}, {"status": "success"}, deadline)
    assert isinstance(again.value.trigger, ConnectifJobTrigger) and again.value.trigger.kind is JobKind.IMPORTS
    assert again.value.trigger.deadline == deadline
    with pytest.raises(ConnectifTimeoutError):
        _op().execute_after_slot({}, {"status": "timeout", "message": "no slot"}, deadline)


def test_complete_downloads_error_report() -> None:
    done = _imp(
        "finished", success=2, errors=2, errorReportFileUrl="https://x/report.csv",
        startedAt="2026-01-01T10:00:00Z", finishedAt="2026-01-01T10:01:30.500Z",
    )  # fmt: skip
    report = [{"line": 1, "field": "_email", "error": "invalid"}, {"line": 3, "field": "_points", "error": "nan"}]
    with mock.patch(f"{HOOK}.download_error_report", return_value=report) as download:
        summary = _op().execute_complete({}, {"status": "success", "imports": [done], "poll_rounds": 3})
    download.assert_called_once_with("https://x/report.csv", import_id="i1")
    assert summary == {
        "import_id": "i1",
        "status": "finished",
        "total": 4,
        "success": 2,
        "errors": 2,
        "rejected_rows": report,
        "report_complete": True,
        "file_path": "/data/chunk-0001.csv",
        "duration_s": 90.5,  # startedAt -> finishedAt
        "api_requests": 5,  # upload + 3 status polls + the error report
    }


def test_row_error_threshold_fails_without_retry() -> None:
    done = _imp("finished", success=2, errors=2, errorReportFileUrl="https://x/report.csv")
    ti = mock.Mock()
    report = [{"line": 1, "field": "_email", "error": "invalid"}, {"line": 3, "field": "_points", "error": "nan"}]
    with (
        mock.patch(f"{HOOK}.download_error_report", return_value=report),
        pytest.raises(ConnectifRowErrorsExceededError, match="rejected 2 of 4") as info,
    ):
        _op(max_row_error_ratio=0.25).execute_complete({"ti": ti}, {"status": "success", "imports": [done]})
    assert isinstance(info.value, AirflowFailException)
    ti.xcom_push.assert_called_once()
    with mock.patch(f"{HOOK}.download_error_report", return_value=report):
        assert _op(max_row_errors=2).execute_complete({}, {"status": "success", "imports": [done]})["errors"] == 2


def test_failure_events_fail_clearly() -> None:
    with pytest.raises(ConnectifImportFailedError, match="i1 is cancelled"):
        _op().execute_complete({}, {"status": "error", "message": "Import i1 is cancelled"})
    with pytest.raises(ConnectifTimeoutError, match="did not finish"):
        _op().execute_complete({}, {"status": "timeout", "message": "still queued"})


def test_templated_fields_and_no_secret_in_arguments() -> None:
    op = _op()
    assert set(op.template_fields) >= {"file_path", "import_type", "coupon_set_id"}
    assert "apiKey" not in repr(vars(op))


def test_split_date_range() -> None:
    assert split_date_range("2024-01-01", "2024-01-31") == [("2024-01-01", "2024-01-31")]
    assert split_date_range("2024-01-01", "2024-03-05") == [
        ("2024-01-01", "2024-01-31"),
        ("2024-02-01", "2024-03-02"),
        ("2024-03-03", "2024-03-05"),
    ]
    parts = split_date_range("2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z")
    assert parts[0] == ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
    assert parts[1][0] == "2024-02-01T00:00:01Z" and parts[-1][1] == "2024-03-01T00:00:00Z"
    with pytest.raises(ValueError, match="after"):
        split_date_range("2024-02-01", "2024-01-01")


def _export_op(**kwargs: Any) -> ConnectifExportOperator:
    params: dict[str, Any] = {
        "task_id": "exp",
        "export_type": "activities",
        "output_dir": "/tmp/out",
        "from_date": "2024-01-01T00:00:00Z",
        "to_date": "2024-03-01T00:00:00Z",
        "connectif_conn_id": "c",
        "poll_interval": 5,
    }
    params.update(kwargs)
    return ConnectifExportOperator(**params)


def test_export_splits_long_range_and_defers() -> None:
    store = DictStore()
    created = iter([{"id": "e1"}, {"id": "e2"}])
    with (
        mock.patch(f"{HOOK}.create_export", side_effect=lambda **_: next(created)) as create,
        pytest.raises(TaskDeferred) as info,
    ):
        _export_op().execute({"task_state_store": store})
    assert create.call_count == 2
    assert isinstance(info.value.trigger, ConnectifJobTrigger) and info.value.trigger.kind is JobKind.EXPORTS
    assert info.value.trigger.job_ids == ["e1", "e2"]
    assert store.data["connectif_export"]["export_ids"] == ["e1", "e2"]


def test_export_queue_full_keeps_created_ones_and_resumes() -> None:
    store = DictStore()
    answers: list[Any] = [{"id": "e1"}, ConnectifExportQueueFullError("E0301", status=400, code="E0301")]
    with mock.patch(f"{HOOK}.create_export", side_effect=answers), pytest.raises(TaskDeferred) as info:
        _export_op().execute({"task_state_store": store})
    assert isinstance(info.value.trigger, ConnectifQueueSlotTrigger) and info.value.trigger.kind == "exports"
    assert store.data["connectif_export"]["export_ids"] == ["e1", None]
    with (
        mock.patch(f"{HOOK}.get_export", return_value={"id": "e1", "status": "inProgress"}),
        mock.patch(f"{HOOK}.create_export", return_value={"id": "e2"}) as create,
        pytest.raises(TaskDeferred) as again,
    ):
        _export_op().execute_after_slot({"task_state_store": store}, {"status": "success"}, 9e9)
    create.assert_called_once()
    assert again.value.trigger.job_ids == ["e1", "e2"]


def test_export_complete_downloads_each(tmp_path: Path) -> None:
    def download(export_id: str, target: Path) -> list[Path]:
        target.mkdir(parents=True)
        path = target / f"export-{export_id}.csv"
        path.write_text("a\n")
        return [path]

    op = _export_op(output_dir=str(tmp_path))
    event = {"status": "success", "exports": [{"id": "e1"}, {"id": "e2"}]}
    with mock.patch(f"{HOOK}.download_export", side_effect=download):
        result = op.execute_complete({}, event)
    assert result["export_ids"] == ["e1", "e2"]
    assert result["files"] == [str(tmp_path / "e1" / "export-e1.csv"), str(tmp_path / "e2" / "export-e2.csv")]
    with pytest.raises(ConnectifExportFailedError):
        op.execute_complete({}, {"status": "error", "message": "boom"})


def test_export_plan_for_data_explorer_and_contacts() -> None:
    op = _export_op(export_type="data-explorer", report_id="r1", from_date="2024-01-01", to_date="2024-02-15")
    assert [(p["from_date"], p["to_date"]) for p in op.plan()] == [
        ("2024-01-01", "2024-01-31"),
        ("2024-02-01", "2024-02-15"),
    ]
    contacts = _export_op(export_type="contacts", from_date=None, to_date=None, segment_id="s1")
    assert contacts.plan() == [
        {
            "export_type": "contacts",
            "delimiter": ",",
            "date_format": "ISO",
            "segment_id": "s1",
            "from_date": None,
            "to_date": None,
        }
    ]
    with pytest.raises(ValueError):
        _export_op(export_type="purchases")


def test_sensor_defers_and_reports() -> None:
    sensor = ConnectifImportSensor(task_id="s", import_ids=["a", "b"], connectif_conn_id="c", poke_interval=7)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    assert info.value.trigger.job_ids == ["a", "b"]
    assert info.value.trigger.poll_interval == 7
    assert sensor.execute_complete({}, {"status": "success", "imports": [{"id": "a"}]}) == [{"id": "a"}]
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, {"status": "timeout", "message": "late"})
    with pytest.raises(ConnectifImportFailedError):
        sensor.execute_complete({}, {"status": "error", "message": "a is error"})


def test_sensor_poke() -> None:
    sensor = ConnectifImportSensor(task_id="s", import_ids="a", connectif_conn_id="c", deferrable=False)
    with mock.patch(f"{HOOK}.get_import", return_value={"id": "a", "status": "inProgress", "total": 2}):
        assert not sensor.poke({}).is_done
    with mock.patch(f"{HOOK}.get_import", return_value={"id": "a", "status": "finished"}):
        result = sensor.poke({})
    assert result.is_done and result.xcom_value == [{"id": "a", "status": "finished"}]
    with (
        mock.patch(f"{HOOK}.get_import", return_value={"id": "a", "status": "error"}),
        pytest.raises(ConnectifImportFailedError),
    ):
        sensor.poke({})


def test_non_deferrable_export_waits_on_the_worker(tmp_path: Path) -> None:
    """The trigger's poll policy on the worker: the first poll 1 s in, queued polls back off (x1.5),
    processing polls return to poll_interval; the files are downloaded."""
    answers = iter(["queued", "queued", "inProgress", "queued", "finished"])
    sleeps: list[float] = []

    def download(export_id: str, target: Path) -> list[Path]:
        target.mkdir(parents=True)
        (target / "export.csv").write_text("a\n")
        return [target / "export.csv"]

    op = _export_op(export_type="contacts", from_date=None, to_date=None, output_dir=str(tmp_path), deferrable=False)
    with (
        mock.patch(f"{HOOK}.create_export", return_value={"id": "e1"}),
        mock.patch(f"{HOOK}.get_export", side_effect=lambda _id: {"id": "e1", "status": next(answers)}),
        mock.patch(f"{HOOK}.download_export", side_effect=download),
        mock.patch("connectif_provider.utils.polling.time.sleep", side_effect=sleeps.append),
    ):
        result = op.execute({"task_state_store": DictStore()})
    assert result == {"export_ids": ["e1"], "files": [str(tmp_path / "e1" / "export.csv")]}
    assert sleeps == pytest.approx([1.0, 5.0, 7.5, 5.0, 5.0])


def test_non_deferrable_import_times_out_with_the_last_status() -> None:
    op = _op(deferrable=False)
    op.timeout = 1.5  # the first poll comes 1 s in, the deadline passes during the next sleep
    with (
        mock.patch(f"{HOOK}.create_import", return_value=_imp()),
        mock.patch(f"{HOOK}.get_import", return_value=_imp("queued")),
        pytest.raises(ConnectifTimeoutError, match="still queued"),
    ):
        op.execute({"task_state_store": DictStore()})


def test_missing_error_report_is_fetched_again_before_giving_up() -> None:
    done = _imp("finished", success=2, errors=2)  # no errorReportFileUrl in the event
    fresh = _imp("finished", success=2, errors=2, errorReportFileUrl="https://x/report.csv")
    report = [{"line": 1, "field": "_email", "error": "invalid"}, {"line": 3, "field": "_points", "error": "nan"}]
    with (
        mock.patch(f"{HOOK}.get_import", return_value=fresh) as get,
        mock.patch(f"{HOOK}.download_error_report", return_value=report),
        mock.patch("connectif_provider.utils.polling.time.sleep"),
    ):
        summary = _op().execute_complete({}, {"status": "success", "imports": [done]})
    get.assert_called_once_with("i1")
    assert summary["report_complete"] is True and summary["rejected_rows"] == report


def test_short_error_report_is_reported_incomplete() -> None:
    done = _imp("finished", success=1, errors=3, errorReportFileUrl="https://x/report.csv")
    short = [{"line": 1, "field": "_email", "error": "invalid"}, {"line": 1, "field": "_name", "error": "long"}]
    with (
        mock.patch(f"{HOOK}.get_import", return_value=done),
        mock.patch(f"{HOOK}.download_error_report", return_value=short) as download,
        mock.patch("connectif_provider.utils.polling.time.sleep"),
    ):
        summary = _op().execute_complete({}, {"status": "success", "imports": [done]})
    assert download.call_count == 3  # read again twice
    assert summary["report_complete"] is False


def test_errors_counted_per_field_are_accounted_for_by_success_and_lines() -> None:
    # 4 rows: 2 imported, 2 failed lines; should Connectif count 3 errors (one line failing on two fields),
    # the report still accounts for every row.
    done = _imp("finished", success=2, errors=3, errorReportFileUrl="https://x/report.csv")
    report = [{"line": 1, "field": "_email", "error": "x"}, {"line": 1, "field": "_name", "error": "y"},
              {"line": 3, "field": "_points", "error": "z"}]  # fmt: skip
    with mock.patch(f"{HOOK}.download_error_report", return_value=report):
        assert _op().execute_complete({}, {"status": "success", "imports": [done]})["report_complete"] is True


def test_import_task_links_to_its_runs_connectif_tab() -> None:
    from types import SimpleNamespace

    from connectif_provider.links import ConnectifRunTabLink

    links = [link for link in ConnectifImportOperator.operator_extra_links if isinstance(link, ConnectifRunTabLink)]
    assert len(links) == 1 and links[0].name == "Connectif sync"
    key = SimpleNamespace(dag_id="connectif_contacts", run_id="manual__2026-01-01T00:00:00+00:00")
    assert links[0].get_link(_op(), ti_key=key).endswith(
        "/dags/connectif_contacts/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/plugin/connectif-sync"
    )
