"""The guardrail and the anomaly alerts in the contacts DAG, through ``dag.test()``: a normal run never waits
(the approval skips), a dry run reports the rules that would fire and asks nothing, anomalies mail once.
The hold itself (a person approving or rejecting) is tested on a real Airflow: test_guardrail_standalone.py."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.fixtures.dags import DagSandbox
from tests.fixtures.mail import Mailbox


def _states(run_id: str) -> dict[str, str | None]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.scalars(sa.select(TaskInstance).where(TaskInstance.run_id == run_id)).all()
        return {ti.task_id: (str(getattr(ti.state, "value", ti.state)) if ti.state else None) for ti in tis}


def test_normal_run_skips_the_approval_and_dry_run_reports_would_hold(
    dag_sandbox: DagSandbox, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(mailbox.connection()))
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ALERT_EMAIL", "ops@example.com")
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ANOMALY_THRESHOLDS", json.dumps({"rejected_share_pct": 1}))
    state, first = dag_sandbox.run("connectif_contacts")
    assert state == "success", first
    assert first["guardrail"] == {"fired": [], "held": False, "would_hold": False, "decision": None}
    states = _states(dag_sandbox.runs[-1])
    assert states["approve_upload"] == "skipped" and states["release"] == "success", states
    # the sample ERP's dirty rows are above a 1 % rejected-share threshold: one mail
    mail = mailbox.wait_for(lambda m: "rejects too many rows" in m["subject"])
    assert mail["to"] == ["ops@example.com"] and "connectif-sync rejected" in mail["text"], mail
    assert f"{first['rejected']} of {first['extracted']} extracted rows" in mail["text"]

    engine = sa.create_engine(dag_sandbox.erp_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET first_name = ''"))
    engine.dispose()
    imports = len(dag_sandbox.emulator.admin.imports())
    state, plan = dag_sandbox.run("connectif_contacts", dry_run=True)
    assert state == "success", plan
    assert plan["guardrail"]["would_hold"] and not plan["guardrail"]["held"]
    assert {"changed_share", "emptied_field"} <= set(plan["guardrail"]["fired"])
    assert any("guardrail would hold the run" in n for n in plan["notes"])
    assert _states(dag_sandbox.runs[-1])["approve_upload"] == "skipped"
    assert len(dag_sandbox.emulator.admin.imports()) == imports
    assert len(mailbox.messages()) == 1  # a dry run tells nobody, and the same anomaly is not told twice


class _TI:
    """What the approval task reads and writes of its task instance."""

    dag_id = "connectif_contacts"
    run_id = "scheduled__2026-03-02T02:00:00+00:00"
    map_index = -1

    def __init__(self, verdict: dict[str, object]) -> None:
        self.verdict = verdict
        self.pushed: dict[str, object] = {}

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> object:
        return self.verdict if (task_ids, key) == ("extract", "guardrail") else None

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def test_timeout_sends_nothing_and_alerts_then_approval_recovers(
    dag_sandbox: DagSandbox, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from connectif_sync.guardrail import Thresholds, evaluate_count

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(mailbox.connection()))
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ALERT_EMAIL", "ops@example.com")
    task = dag_sandbox.dagbag.get_dag("connectif_contacts").get_task("approve_upload")
    verdict = evaluate_count("contacts", 900, Thresholds(max_rows=10)).as_dict()
    ti = _TI(verdict)
    context = {"ti": ti, "task": task, "task_instance": ti}
    # what the scheduler resumes the task with when nobody answered: the default option, no user
    timed_out = {"chosen_options": ["Reject"], "params_input": {}, "responded_at": datetime.now(UTC),
                 "responded_by_user": None}  # fmt: skip
    with pytest.raises(Exception) as skipped:
        task.execute_complete(context, timed_out)
    assert "release" in str(getattr(skipped.value, "tasks", skipped.value))
    assert ti.pushed["decision"] == {"decision": "timed out (rejected)", "by": None}
    mail = mailbox.wait_for(lambda m: "upload rejected" in m["subject"])
    assert "timed out" in mail["text"] and "count: 900" in mail["text"]
    approved = {"chosen_options": ["Approve"], "params_input": {}, "responded_at": datetime.now(UTC),
                "responded_by_user": {"id": "1", "name": "ana"}}  # fmt: skip
    task.execute_complete(context, approved)
    assert ti.pushed["decision"] == {"decision": "approved", "by": "ana"}
    recovered = mailbox.wait_for(lambda m: "RECOVERED" in m["subject"])
    assert "approved by ana" in recovered["text"]
