"""The guardrail on a real Airflow (``airflow standalone`` on PostgreSQL, emulator, local SMTP server).

An upstream job blanks every customer's first name; the next ``connectif_contacts`` run must create no
import, ask for approval (human-in-the-loop: the request with the plan is what the UI's *Required actions*
page lists) and mail the configured address. Rejecting leaves Connectif as it was. A held run that fails
(its approval task marked failed, as when a component dies under it) mails the failure from the DAG
processor's DAG callback; approving a later run sends the rows and mails the recovery. The scheduler gives
every run the deadline of the Variable ``connectif_deadline_connectif_contacts_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from emulator.testing import RunningEmulator
from tests.fixtures.airflow_stack import AirflowStack
from tests.fixtures.mail import Mailbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DAG_ID = "connectif_contacts"


@pytest.fixture
def stack(
    tmp_path: Path, emulator: RunningEmulator, airflow_stack: AirflowStack, mailbox: Mailbox
) -> Iterator[tuple[AirflowStack, str]]:
    """The session's Airflow with this test's sample ERP, alert address and SMTP server (``mailbox``)."""
    from sample_erp import generate

    erp_url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    generate(erp_url, contacts=200, products=10, orders=5, coupons=10, seed=5, dirty_rate=0.0)
    with airflow_stack.configured(
        tmp_path,
        source_url=erp_url,
        alert_email="data-team@example.com",
        connections={"smtp_default": mailbox.connection()},
        deadline_connectif_contacts_seconds="5400",
    ) as configured:
        yield configured, erp_url


def _names(emulator: RunningEmulator) -> dict[str, str]:
    return {c["_email"]: c.get("_name") or "" for c in emulator.admin.contacts()}


def _wait_pending(client: Any, run_id: str, timeout: float = 480) -> list[dict[str, Any]]:
    """The run's approval requests, once one waits for an answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        details = client._json("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/hitlDetails")["hitl_details"]
        states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, run_id)}
        if details and states.get("approve_upload") not in (None, "queued", "scheduled", "running"):
            return list(details)
        assert states.get("import_file") not in ("success", "running", "deferred"), states
        assert client.run(DAG_ID, run_id)["state"] in ("queued", "running"), states
        time.sleep(2)
    raise AssertionError(f"no approval request within {timeout} s")


def _settled(airflow: AirflowStack, client: Any, run_id: str, timeout: float = 180) -> None:
    """Wait until the scheduler has seen the approval task's worker exit after parking it.

    Airflow 3.3.2 races here: an answer given while that worker is still exiting (seconds, under load)
    resumes the task, then the late "worker finished" event marks the resumed task as changed externally and
    it is retried, which asks again. A person never answers that fast; the test waits like one.
    """
    ti_id = next(ti["id"] for ti in client.task_instances(DAG_ID, run_id) if ti["task_id"] == "approve_upload")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("TaskInstance Finished" in line and f"ti_id={ti_id}" in line
               for line in airflow.log_path.read_text(errors="replace").splitlines()):  # fmt: skip
            return
        time.sleep(1)
    raise AssertionError(f"the approval task's worker did not finish parking within {timeout} s")


def _deadline_after_queued(client: Any, run_id: str) -> float:
    """Seconds between the run's queueing and its deadline, as the scheduler stored it (the UI's endpoint; only
    while the run is not done: Airflow drops the deadlines of a run that succeeded)."""
    from datetime import datetime

    client._json("GET", f"/dags/{DAG_ID}")  # logged in
    resp = client._http.get(f"/ui/dags/{DAG_ID}/dagRuns/{run_id}/deadlines",
                            headers={"Authorization": f"Bearer {client._token}"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    deadlines = resp.json()["deadlines"]
    assert len(deadlines) == 1, deadlines
    queued = datetime.fromisoformat(client.run(DAG_ID, run_id)["queued_at"])
    return (datetime.fromisoformat(deadlines[0]["deadline_time"]) - queued).total_seconds()


def _answer(client: Any, run_id: str, option: str) -> None:
    client._json(
        "PATCH",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_upload/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {}},
    )


def test_blanked_first_names_wait_for_approval(
    stack: tuple[AirflowStack, str], emulator: RunningEmulator, mailbox: Mailbox
) -> None:
    airflow, erp_url = stack
    with airflow.client() as client:
        client.set_paused(DAG_ID, False)
        first = client.trigger(DAG_ID, conf={})
        assert client.wait_for_run(DAG_ID, first["dag_run_id"], timeout=600)["state"] == "success"
        before = _names(emulator)
        imports_before = len(emulator.admin.imports())
        assert len(before) > 150 and sum(1 for n in before.values() if n) > 150
        assert mailbox.messages() == []  # a normal run asks nothing and tells nothing

        engine = sa.create_engine(erp_url)
        with engine.begin() as conn:  # the broken upstream job
            conn.execute(sa.text("UPDATE customers SET first_name = NULL"))
        engine.dispose()

        # 1. held, then rejected: nothing reaches Connectif
        held = client.trigger(DAG_ID, conf={})
        details = _wait_pending(client, held["dag_run_id"])
        assert len(emulator.admin.imports()) == imports_before
        # the scheduler gave the run the Variable's deadline (a finished run's deadline is dropped: asked now)
        assert _deadline_after_queued(client, held["dag_run_id"]) == 5400
        body = details[0]["body"]
        assert "emptied_field" in body and "_name" in body and "(filled)" in body and "(empty)" in body
        assert set(details[0]["options"]) == {"Approve", "Reject"}
        # what the UI's Required actions page lists: every request still waiting for an answer
        waiting = client._json("GET", "/dags/~/dagRuns/~/hitlDetails", params={"response_received": "false"})
        listed = [d for d in waiting["hitl_details"] if d["task_instance"]["dag_run_id"] == held["dag_run_id"]]
        assert listed and "emptied_field" in listed[0]["body"] and "Sample keys" in listed[0]["body"], waiting
        assert listed[0]["subject"].startswith(f"{DAG_ID}: approve the contacts upload?")
        asked = mailbox.wait_for(lambda m: "held for approval" in m["subject"], timeout=30)
        assert "data-team@example.com" in asked["to"] and "emptied_field" in asked["text"]
        _settled(airflow, client, held["dag_run_id"])
        _answer(client, held["dag_run_id"], "Reject")
        done = client.wait_for_run(DAG_ID, held["dag_run_id"], timeout=300)
        states = {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG_ID, held["dag_run_id"])}
        assert done["state"] == "success", states
        assert states["release"] == "skipped" and states["publish"] == "skipped", states
        assert len(emulator.admin.imports()) == imports_before
        assert _names(emulator) == before
        mailbox.wait_for(lambda m: "upload rejected" in m["subject"], timeout=30)
        summary = client.xcom(DAG_ID, held["dag_run_id"], "report", key="summary")
        assert summary["guardrail"]["decision"] == "rejected" and summary["sent"] == 0

        # 2. held again; its approval task fails (as when the worker under it dies): the DAG processor's
        # failure callback mails the failure
        broken = client.trigger(DAG_ID, conf={})
        _wait_pending(client, broken["dag_run_id"])
        _settled(airflow, client, broken["dag_run_id"])
        client._json("PATCH", f"/dags/{DAG_ID}/dagRuns/{broken['dag_run_id']}/taskInstances/approve_upload",
                     json={"new_state": "failed"})  # fmt: skip
        assert client.wait_for_run(DAG_ID, broken["dag_run_id"], timeout=300)["state"] == "failed"
        failed = mailbox.wait_for(lambda m: m["subject"] == f"[Connectif sync] {DAG_ID} failed", timeout=120)
        assert broken["dag_run_id"] in failed["text"] and "data-team@example.com" in failed["to"]
        assert len(emulator.admin.imports()) == imports_before and _names(emulator) == before

        # 3. held again, approved: the rows arrive, and the failure clears with a recovery notice
        again = client.trigger(DAG_ID, conf={})
        _wait_pending(client, again["dag_run_id"])
        assert len(emulator.admin.imports()) == imports_before
        _settled(airflow, client, again["dag_run_id"])
        _answer(client, again["dag_run_id"], "Approve")
        done = client.wait_for_run(DAG_ID, again["dag_run_id"], timeout=600)
        assert done["state"] == "success"
        imports = emulator.admin.imports()[imports_before:]
        assert imports and all(i["status"] == "finished" for i in imports)
        assert sum(int(i["total"]) for i in imports) == len(before)  # every contact, with its empty name
        summary = client.xcom(DAG_ID, again["dag_run_id"], "report", key="summary")
        assert summary["guardrail"]["decision"] == "approved" and summary["sent"] == len(before)
        mailbox.wait_for(lambda m: m["subject"].startswith(f"[Connectif sync] RECOVERED: {DAG_ID}: runs succeed"),
                         timeout=120)  # fmt: skip
