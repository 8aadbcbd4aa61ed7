"""Triggers in isolation: serialisation round-trip, events, tolerance of transient errors, poll backoff."""

from __future__ import annotations

import importlib
import time
from typing import Any
from unittest import mock

import pytest

from connectif_provider.exceptions import (
    ConnectifNotFoundError,
    ConnectifRateLimitedError,
    ConnectifServerError,
    ConnectifTransportError,
)
from connectif_provider.triggers.connectif import (
    ConnectifExportTrigger,
    ConnectifImportTrigger,
    ConnectifJobTrigger,
    ConnectifQueueSlotTrigger,
)

MODULE = "connectif_provider.triggers.connectif"


def _imp(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "i1", "status": status, "total": 10, "success": 0, "errors": 0, **fields}


@pytest.fixture
def sleeps() -> Any:
    """Record the trigger's sleeps instead of sleeping."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    with mock.patch("connectif_provider.utils.polling.asyncio.sleep", fake_sleep):
        yield recorded


async def _collect(trigger: Any) -> list[dict[str, Any]]:
    return [dict(event.payload) async for event in trigger.run()]


@pytest.mark.parametrize(
    "trigger",
    [
        ConnectifImportTrigger(import_ids=["a", "b"], connectif_conn_id="c", poll_interval=5, deadline=123.0),
        ConnectifExportTrigger(export_ids=["e"], connectif_conn_id="c", poll_interval=7, max_poll_interval=9),
        ConnectifQueueSlotTrigger(kind="exports", connectif_conn_id="c", poll_interval=3),
        ConnectifJobTrigger(kind="imports", job_ids=["a"], connectif_conn_id="c", poll_interval=4),
    ],
)
def test_serialize_round_trip(trigger: Any) -> None:
    classpath, kwargs = trigger.serialize()
    module_name, _, class_name = classpath.rpartition(".")
    assert module_name == MODULE and class_name == type(trigger).__name__
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert "password" not in str(kwargs) and "api_key" not in str(kwargs)


async def test_import_success_after_queued_and_in_progress(sleeps: list[float]) -> None:
    answers = [
        _imp("queued"),
        _imp("queued"),
        _imp("queued"),
        _imp("inProgress", success=4, errors=1),
        _imp("finished", success=8, errors=2),
    ]
    trigger = ConnectifImportTrigger(import_ids=["i1"], connectif_conn_id="c", poll_interval=10, max_poll_interval=20)
    with mock.patch(f"{MODULE}.ConnectifHook.aget_import", mock.AsyncMock(side_effect=answers)) as get:
        events = await _collect(trigger)
    # poll_rounds: the status polls the wait took (the run summary counts them as API requests spent)
    assert events == [{"status": "success", "imports": [answers[-1]], "poll_rounds": len(answers)}]
    assert get.await_count == 5  # one GET per poll
    assert sleeps == [1, 10, 15, 20, 10]  # first poll after 1 s; backs off while queued (capped)


async def test_import_error_and_cancelled(sleeps: list[float]) -> None:
    for status in ("error", "cancelled"):
        trigger = ConnectifImportTrigger(import_ids=["i1"], connectif_conn_id="c", poll_interval=1)
        with mock.patch(f"{MODULE}.ConnectifHook.aget_import", mock.AsyncMock(return_value=_imp(status))):
            events = await _collect(trigger)
        assert events[0]["status"] == "error"
        assert status in events[0]["message"]


async def test_transient_failures_do_not_end_the_wait(sleeps: list[float]) -> None:
    answers: list[Any] = [
        ConnectifServerError("503", status=503),
        ConnectifRateLimitedError("429", status=429, retry_after=1),
        ConnectifTransportError("dropped"),
        _imp("finished", success=10),
    ]
    trigger = ConnectifImportTrigger(import_ids=["i1"], connectif_conn_id="c", poll_interval=2)
    with mock.patch(f"{MODULE}.ConnectifHook.aget_import", mock.AsyncMock(side_effect=answers)):
        events = await _collect(trigger)
    assert events[0]["status"] == "success"
    assert len(sleeps) == 4


async def test_unknown_import_is_an_error_event(sleeps: list[float]) -> None:
    trigger = ConnectifImportTrigger(import_ids=["i1"], connectif_conn_id="c", poll_interval=2)
    missing = ConnectifNotFoundError("Connectif GET /imports/i1 answered 404", status=404)
    with mock.patch(f"{MODULE}.ConnectifHook.aget_import", mock.AsyncMock(side_effect=missing)):
        events = await _collect(trigger)
    assert events == [{"status": "error", "message": str(missing), "imports": []}]


async def test_timeout_event_at_deadline(sleeps: list[float]) -> None:
    trigger = ConnectifImportTrigger(
        import_ids=["i1"], connectif_conn_id="c", poll_interval=2, deadline=time.time() - 1
    )
    with mock.patch(f"{MODULE}.ConnectifHook.aget_import", mock.AsyncMock()) as get:
        events = await _collect(trigger)
    assert events[0]["status"] == "timeout"
    get.assert_not_awaited()


async def test_several_imports_wait_for_all(sleeps: list[float]) -> None:
    state = {"a": ["inProgress", "finished"], "b": ["queued", "inProgress", "finished"]}

    async def get(import_id: str) -> dict[str, Any]:
        seq = state[import_id]
        status = seq.pop(0) if len(seq) > 1 else seq[0]
        return {"id": import_id, "status": status, "total": 1, "success": 1 if status == "finished" else 0}

    trigger = ConnectifImportTrigger(import_ids=["a", "b"], connectif_conn_id="c", poll_interval=1)
    with mock.patch(f"{MODULE}.ConnectifHook.aget_import", side_effect=get, autospec=False):
        events = await _collect(trigger)
    assert events[0]["status"] == "success"
    assert [i["id"] for i in events[0]["imports"]] == ["a", "b"]


async def test_export_trigger(sleeps: list[float]) -> None:
    answers = [{"id": "e", "status": "queued"}, {"id": "e", "status": "inProgress"}, {"id": "e", "status": "finished"}]
    trigger = ConnectifExportTrigger(export_ids=["e"], connectif_conn_id="c", poll_interval=1)
    with mock.patch(f"{MODULE}.ConnectifHook.aget_export", mock.AsyncMock(side_effect=answers)):
        events = await _collect(trigger)
    assert [{k: v for k, v in ev.items() if k != "poll_rounds"} for ev in events] == [
        {"status": "success", "exports": [answers[-1]]}
    ]
    trigger = ConnectifExportTrigger(export_ids=["e"], connectif_conn_id="c", poll_interval=1)
    with mock.patch(f"{MODULE}.ConnectifHook.aget_export", mock.AsyncMock(return_value={"id": "e", "status": "error"})):
        assert (await _collect(trigger))[0]["status"] == "error"


async def test_queue_slot_trigger(sleeps: list[float]) -> None:
    trigger = ConnectifQueueSlotTrigger(kind="imports", connectif_conn_id="c", poll_interval=1)
    with mock.patch(f"{MODULE}.ConnectifHook.acount_active_imports", mock.AsyncMock(side_effect=[10, 10, 9])):
        events = await _collect(trigger)
    assert [{k: v for k, v in ev.items() if k != "poll_rounds"} for ev in events] == [
        {"status": "success", "active": 9}
    ]
    assert sleeps == [1, 1, 1.5]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ConnectifImportTrigger(import_ids=[])
    with pytest.raises(ValueError, match="kind"):
        ConnectifQueueSlotTrigger(kind="purchases")
    with pytest.raises(ValueError, match="poll_interval"):
        ConnectifImportTrigger(import_ids=["a"], poll_interval=0)


def test_old_class_paths_are_the_job_trigger_under_their_persisted_arguments() -> None:
    """The triggerer keeps the class path and kwargs of every deferred task: rows written by earlier versions
    (ConnectifImportTrigger/ConnectifExportTrigger) must still build, and build the one job trigger."""
    old = ConnectifImportTrigger(import_ids=["a"], connectif_conn_id="c", poll_interval=5, deadline=9.0)
    assert isinstance(old, ConnectifJobTrigger) and old.kind.value == "imports" and old.job_ids == ["a"]
    assert old.serialize()[0] == f"{MODULE}.ConnectifImportTrigger"
    exports = ConnectifExportTrigger(export_ids=["e"], connectif_conn_id="c")
    assert exports.kind.value == "exports" and exports.export_ids == ["e"]


async def test_one_max_poll_interval_default(sleeps: list[float]) -> None:
    """Every wait takes the same cap by default: 10x poll_interval, at most 600 s (or poll_interval)."""
    for interval, cap in ((5, 50), (100, 600), (900, 900)):
        assert ConnectifJobTrigger(kind="exports", job_ids=["e"], poll_interval=interval).max_poll_interval == cap
        assert ConnectifQueueSlotTrigger(kind="imports", poll_interval=interval).max_poll_interval == cap
