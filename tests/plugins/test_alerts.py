"""Alerts reach people through Airflow notifiers (mails read from a local SMTP server), only when their state
changes; the late-run Deadline Alert's callback."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectif_provider import alerts
from connectif_sync.alerts import AlertKind, compose
from connectif_sync.state import StateStore
from tests.fixtures.mail import Mailbox


@pytest.fixture
def configured(mailbox: Mailbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Alerts mailed to ops@example.com through the mailbox; returns the state store URL."""
    state = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(mailbox.connection()))
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ALERT_EMAIL", "ops@example.com, dev@example.com")
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ALERT_FROM", "sync@example.com")
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_STATE_URL", state)
    return state


def test_failure_mails_once_then_recovery_once(configured: str, mailbox: Mailbox) -> None:
    cb = alerts.RunCallbacks("connectif_contacts", late_default=timedelta(hours=2), state_url_default=None)
    for day in range(3):  # a failure that repeats every day sends one mail, not one a day
        cb.on_failure({"run_id": f"scheduled__{day}", "reason": "task_failure", "exception": "E0101 boom"})
    mail = mailbox.wait_for(lambda m: True)
    assert mail["subject"] == "[Connectif sync] connectif_contacts failed"
    assert set(mail["to"]) == {"ops@example.com", "dev@example.com"} and mail["from"] == "sync@example.com"
    assert "E0101 boom" in mail["text"] and "scheduled__0" in mail["text"]
    dag_run = type("DR", (), {"queued_at": datetime.now(UTC) - timedelta(minutes=5), "end_date": datetime.now(UTC)})
    cb.on_success({"run_id": "scheduled__3", "dag_run": dag_run})
    cb.on_success({"run_id": "scheduled__4", "dag_run": dag_run})
    recovered = mailbox.wait_for(lambda m: "RECOVERED" in m["subject"])
    assert recovered["subject"] == "[Connectif sync] RECOVERED: connectif_contacts: runs succeed again"
    assert len(mailbox.messages()) == 2
    with StateStore(configured) as store:
        assert [(a["kind"], a["active"]) for a in store.alerts("connectif_contacts")] == [("failure", False)]


def test_late_run_callback_runs_off_the_event_loop_and_clears_on_time(configured: str, mailbox: Mailbox) -> None:
    context = {
        "dag_run": {"dag_id": "connectif_purchases", "dag_run_id": "scheduled__x", "state": "running",
                    "queued_at": "2026-03-02T10:00:00Z"},
        "deadline": {"id": "d1", "deadline_time": "2026-03-02T10:45:00Z"},
    }  # fmt: skip
    for _ in range(2):
        asyncio.run(alerts.run_late(dag_id="connectif_purchases", context=context))
    late = mailbox.wait_for(lambda m: "is late" in m["subject"])
    assert "connectif_deadline_connectif_purchases_seconds" in late["text"] and "scheduled__x" in late["text"]
    assert len(mailbox.messages()) == 1
    cb = alerts.RunCallbacks("connectif_purchases", late_default=timedelta(minutes=45), state_url_default=None)
    slow = type("DR", (), {"queued_at": datetime.now(UTC) - timedelta(hours=2), "end_date": datetime.now(UTC)})
    cb.on_success({"run_id": "r1", "dag_run": slow})  # finished, but late again: still late
    assert len(mailbox.messages()) == 1
    quick = type("DR", (), {"queued_at": datetime.now(UTC) - timedelta(minutes=3), "end_date": datetime.now(UTC)})
    cb.on_success({"run_id": "r2", "dag_run": quick})
    mailbox.wait_for(lambda m: "finish on time again" in m["subject"])


def test_late_run_is_not_late_while_a_person_is_asked(configured: str, mailbox: Mailbox) -> None:
    with StateStore(configured) as store:
        store.alert_transition("connectif_contacts", str(AlertKind.HOLD), True, "manual__1")
    context = {"dag_run": {"dag_id": "connectif_contacts", "dag_run_id": "manual__1"}, "deadline": {}}
    asyncio.run(alerts.run_late(dag_id="connectif_contacts", context=context))
    assert mailbox.messages() == []


class _Recorder:
    """A notifier the user configures by a Variable (its class path), collecting what it was given."""

    received: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def __call__(self, context: dict[str, Any]) -> None:
        _Recorder.received.append({"kwargs": self.kwargs, "alert": context["connectif_alert"]})


def test_configured_notifier_gets_the_alert_and_a_broken_channel_does_not_silence_others(
    configured: str, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Recorder.received = []
    spec = [{"class": f"{__name__}._Recorder", "kwargs": {"channel": "#data"}}]
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ALERT_NOTIFIERS", json.dumps(spec))
    nowhere = {"conn_type": "smtp", "host": "127.0.0.1", "port": 1, "extra": {"disable_ssl": True, "timeout": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(nowhere))
    alert = compose("connectif_products", AlertKind.IMPORT_ERRORS, "raised", "2 imports ended in error")
    assert alerts.send(alert) == 1  # the mail could not go; the configured notifier still got it
    assert _Recorder.received[0]["kwargs"] == {"channel": "#data"}
    assert _Recorder.received[0]["alert"]["subject"] == alert.subject
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ALERT_NOTIFIERS", "{not json")
    with pytest.raises(ValueError, match="connectif_alert_notifiers must be a JSON list"):
        alerts.notifiers()


def test_an_alert_no_channel_took_is_told_again_next_time(
    configured: str, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    cb = alerts.RunCallbacks("connectif_products", late_default=timedelta(hours=2), state_url_default=None)
    nowhere = {"conn_type": "smtp", "host": "127.0.0.1", "port": 1, "extra": {"disable_ssl": True, "timeout": 2}}
    with monkeypatch.context() as m:
        m.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(nowhere))  # the mail server is down
        cb.on_failure({"run_id": "scheduled__1", "reason": "task_failure"})
    with StateStore(configured) as store:
        assert [a["active"] for a in store.alerts("connectif_products")] == [False]
    cb.on_failure({"run_id": "scheduled__2", "reason": "task_failure"})  # the server is back
    mail = mailbox.wait_for(lambda m: "failed" in m["subject"])
    assert "scheduled__2" in mail["text"]


def test_values_from_the_data_are_not_templates(configured: str, mailbox: Mailbox) -> None:
    alert = compose("connectif_contacts", AlertKind.HOLD, "ask", "sample key {{ 7 * 7 }} <b>x</b>")
    alerts.send(alert)
    mail = mailbox.wait_for(lambda m: True)
    assert "{{ 7 * 7 }}" in mail["html"] and "49" not in mail["html"] and "&lt;b&gt;" in mail["html"]
