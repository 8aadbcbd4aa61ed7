"""``connectif_coupons`` end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

import json

import pytest

from connectif_sync.coupons import refused_ids
from connectif_sync.state import StateStore
from tests.fixtures.dags import DagSandbox
from tests.fixtures.mail import Mailbox
from tests.fixtures.sql import query


def pool(sandbox: DagSandbox) -> list[dict[str, object]]:
    return query(sandbox.erp_url, "SELECT * FROM coupon_pool ORDER BY id")


def seed_sets(sandbox: DagSandbox) -> list[str]:
    admin = sandbox.emulator.admin
    sets = list(sandbox.generated["coupon_sets"])
    for n, set_id in enumerate(sets):
        admin.create_coupon_set(name=f"set {n}", type="multiple", id=set_id)
    admin.create_workflow(name="welcome", status="active", coupon_set_ids=sets[:2])
    admin.create_workflow(name="draft", status="draft", coupon_set_ids=sets[2:])
    return sets


def test_low_sets_of_active_workflows_get_the_pool_codes_marked_used_once_confirmed(dag_sandbox: DagSandbox) -> None:
    sets = seed_sets(dag_sandbox)
    before = pool(dag_sandbox)

    state, summary = dag_sandbox.run("connectif_coupons")

    assert state == "success", summary
    after = {r["id"]: r for r in pool(dag_sandbox)}
    rejected_ids = set(refused_ids(dag_sandbox.state_url))  # the pool ids refused, kept as integers
    with StateStore(dag_sandbox.state_url) as store:
        assert {r["source_ref"] for r in store.rejected("coupons")} == {f"id={i}" for i in rejected_ids}
    for refilled in sets[:2]:
        unused = [r for r in before if r["coupon_set_id"] == refilled and r["status"] == "unused"]
        valid = [r for r in unused if r["id"] not in rejected_ids]
        stored = {c["code"] for c in dag_sandbox.emulator.admin.coupon_codes(refilled)}
        assert stored == {r["code"] for r in valid}
        assert all(after[r["id"]]["status"] == "used" and after[r["id"]]["used_at"] for r in valid), summary["notes"]
        assert all(after[i]["status"] == "unused" for i in rejected_ids)
    assert dag_sandbox.emulator.admin.coupon_codes(sets[2]) == []  # its only workflow is a draft
    assert all(after[r["id"]]["status"] == r["status"] for r in before if r["coupon_set_id"] == sets[2])
    dirty = dag_sandbox.generated["dirty"]["coupon_pool"]
    null_codes = {r["id"] for r in before if r["coupon_set_id"] in sets[:2] and r["code"] is None}
    assert null_codes <= rejected_ids <= set(dirty["null_code"]) | set(dirty["duplicate_code"])
    assert summary["sent"] == sum(summary["marked_used"].values()) > 0
    assert summary["imports"] == 2

    state, summary = dag_sandbox.run("connectif_coupons")

    assert state == "success"
    assert summary["to_send"] == 0
    assert summary["imports"] == 0
    assert pool(dag_sandbox) == list(after.values())


def test_coupons_dry_run_imports_and_marks_nothing(dag_sandbox: DagSandbox) -> None:
    sets = seed_sets(dag_sandbox)
    before = pool(dag_sandbox)

    state, summary = dag_sandbox.run("connectif_coupons", dry_run=True)

    assert state == "success"
    assert summary["sets_refilled"] == 2
    assert summary["to_send"] > 0
    assert all(dag_sandbox.emulator.admin.coupon_codes(s) == [] for s in sets)
    assert pool(dag_sandbox) == before


def test_coupons_guardrail_holds_a_big_refill_and_a_short_pool_alerts_once(
    dag_sandbox: DagSandbox, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.dags.test_guardrail_dag import _states

    sets = seed_sets(dag_sandbox)
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(mailbox.connection()))
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_ALERT_EMAIL", "ops@example.com")
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_GUARDRAIL", json.dumps({"coupons": {"max_rows": 5}}))

    state, plan = dag_sandbox.run("connectif_coupons", dry_run=True)

    assert state == "success", plan
    assert plan["guardrail"]["fired"] == ["count"] and plan["guardrail"]["would_hold"], plan
    assert _states(dag_sandbox.runs[-1])["approve_upload"] == "skipped"
    assert all(dag_sandbox.emulator.admin.coupon_codes(s) == [] for s in sets)
    assert mailbox.messages() == []  # a dry run tells nobody

    monkeypatch.delenv("AIRFLOW_VAR_CONNECTIF_GUARDRAIL")
    for _ in range(2):  # the pool cannot give 100,000 codes a set: one mail, not one per run
        state, summary = dag_sandbox.run("connectif_coupons", refill_to=100_000, threshold=99_999)
        assert state == "success", summary
        assert set(summary["pool_short"]) == set(sets[:2]) and summary["guardrail"]["fired"] == []
    mail = mailbox.wait_for(lambda m: "cannot refill coupon sets" in m["subject"])
    assert sets[0] in mail["text"] and mail["to"] == ["ops@example.com"]
    assert len([m for m in mailbox.messages() if "cannot refill" in m["subject"]]) == 1
