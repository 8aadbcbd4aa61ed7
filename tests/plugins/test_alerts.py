"""Alerts reach people through Airflow notifiers (mails read from a local SMTP server), only when their state
changes; the late-run Deadline Alert and its callback; the metrics names."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectif_provider import alerts, metrics
from connectif_sync.alerts import AlertKind, anomalies, compose
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


class _Session:
    """The scheduler's session, as the deadline reference uses it: the run's ``queued_at``, and the Variable
    row of the metadata database (none here: the environment or the default decide)."""

    def __init__(self, queued_at: datetime | None) -> None:
        self.queued_at = queued_at

    def scalar(self, query: Any) -> Any:
        return self.queued_at if "queued_at" in str(query) else None


def test_deadline_variable_tunes_the_deadline_without_a_deploy(dagbag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAG file reads no Variable; the scheduler, creating a run, reads the Variable or takes the default."""
    from airflow.sdk import Variable
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.encoders import encode_deadline_alert
    from connectif_dags.alerting import dag_alerting

    from connectif_provider.deadlines import QueuedPlusVariable

    def no_parse_time_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a DAG file read a Variable while it was parsed")

    with monkeypatch.context() as m:
        m.setattr(Variable, "get", staticmethod(no_parse_time_read))
        alert = dag_alerting("connectif_contacts", late_after=timedelta(hours=2))["deadline"]
    assert alert.reference == QueuedPlusVariable("connectif_deadline_connectif_contacts_seconds", 7200)
    assert alert.interval == timedelta(0) and alert.callback.path == "connectif_provider.alerts.run_late"
    # what the scheduler does when it creates a run: decode the stored alert (the class is found through the
    # provider's plugin), then evaluate it against the run
    stored = decode_deadline_alert(encode_deadline_alert(alert))
    queued = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)

    def deadline() -> datetime:
        return stored.reference.evaluate_with(session=_Session(queued), interval=stored.interval,
                                              dag_id="connectif_contacts", run_id="scheduled__x")  # fmt: skip

    assert deadline() == queued + timedelta(hours=2)  # no Variable: the DAG's default, the run is created
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_DEADLINE_CONNECTIF_CONTACTS_SECONDS", "600")
    assert deadline() == queued + timedelta(seconds=600)
    assert alerts.late_after("connectif_contacts", timedelta(hours=2)) == timedelta(seconds=600)  # recovery check
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_DEADLINE_CONNECTIF_CONTACTS_SECONDS", "ten minutes")
    assert deadline() == queued + timedelta(hours=2)  # a typo never stops runs from being created
    assert stored.reference.evaluate_with(session=_Session(None), interval=stored.interval,
                                          dag_id="connectif_contacts", run_id="gone") is None  # fmt: skip


def test_the_scheduler_reads_the_deadline_variable_inside_its_own_session(dagbag: Any) -> None:
    """Variable.get would close Airflow's thread-local session, the scheduler's, in the middle of creating a run
    (every object it holds detached: the scheduler crashed). The reference reads through that session instead."""
    import sqlalchemy as sa
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    from connectif_provider.deadlines import scheduler_variable

    key, other = "connectif_deadline_connectif_products_seconds", "connectif_probe_held"
    with create_session() as session:
        session.execute(sa.delete(Variable).where(Variable.key.in_([key, other])))
        session.add_all([Variable(key=key, val="1200"), Variable(key=other, val="x")])
    with create_session() as session:
        held = session.scalars(sa.select(Variable).where(Variable.key == other)).one()  # what the scheduler holds
        assert scheduler_variable(key, session) == "1200"
        assert scheduler_variable("connectif_deadline_nobody_seconds", session) is None
        assert held in session and held.key == other  # still attached (Variable.get would have detached it)
        session.execute(sa.delete(Variable).where(Variable.key.in_([key, other])))


def test_every_connectif_dag_has_failure_callbacks_and_a_deadline(dagbag: Any) -> None:
    for dag_id in ("connectif_contacts", "connectif_products", "connectif_purchases", "connectif_contact_erasure",
                   "connectif_coupons", "connectif_exports"):  # fmt: skip
        dag = dagbag.get_dag(dag_id)
        assert dag.on_failure_callback and dag.on_success_callback, dag_id
        assert dag.deadline, dag_id


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


def test_anomalies_of_a_summary() -> None:
    summary = {"extracted": 100, "rejected": 9, "rejected_by_connectif": 2, "imports": 3, "import_errors": 1}
    found = anomalies(summary)
    assert found[AlertKind.REJECTED_SHARE] is not None and "7 of 100" in found[AlertKind.REJECTED_SHARE]
    assert found[AlertKind.IMPORT_ERRORS] is not None
    assert AlertKind.PURCHASES_KEPT not in found
    calm = anomalies({"extracted": 100, "rejected": 1, "kept": 0, "imports": 1, "rejected_by_connectif": 0})
    assert calm == {AlertKind.REJECTED_SHARE: None, AlertKind.PURCHASES_KEPT: None, AlertKind.IMPORT_ERRORS: None}
    assert anomalies({"dry_run": True, "extracted": 10, "rejected": 10}) == {}
    short = anomalies({"pool_short": {"set-b": 30, "set-a": 5}})[AlertKind.COUPON_POOL_LOW]
    assert short is not None and "lacks 35 codes" in short and "set-a (5 short), set-b (30 short)" in short
    assert anomalies({"pool_short": {}}) == {AlertKind.COUPON_POOL_LOW: None}
    assert anomalies({"pool_short": {"s": 3}}, {"coupon_pool_short": 10}) == {AlertKind.COUPON_POOL_LOW: None}


def test_metrics_go_through_airflow_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.observability import stats

    calls: list[tuple[str, str, Any, dict[str, Any]]] = []

    class Backend:
        def incr(self, stat: str, count: int = 1, rate: Any = None, tags: Any = None) -> None:
            calls.append(("incr", stat, count, tags or {}))

        def timing(self, stat: str, dt: Any, tags: Any = None) -> None:
            calls.append(("timing", stat, dt, tags or {}))

    stats.initialize(factory=Backend, export_legacy_names=False)
    try:
        metrics.rows("contacts", sent=120, rejected=7)
        metrics.api_request("POST")
        metrics.rate_limited()
        metrics.rate_limit_wait(1.5)
        metrics.rate_limit_wait(None)
    finally:
        stats.initialize(factory=stats.NoStatsLogger if hasattr(stats, "NoStatsLogger") else Backend,
                         export_legacy_names=True)  # fmt: skip
    names = [(kind, name, value) for kind, name, value, _ in calls]
    assert ("incr", "connectif.rows_sent", 120) in names and ("incr", "connectif.rows_sent.contacts", 120) in names
    assert ("incr", "connectif.rows_rejected.contacts", 7) in names
    assert ("incr", "connectif.api_requests", 1) in names and ("incr", "connectif.api_429", 1) in names
    assert ("timing", "connectif.rate_limit_wait_ms", 1500.0) in names
    assert all(name in metrics.ALL or name.rsplit(".", 1)[0] in metrics.ALL for _, name, _ in names)
