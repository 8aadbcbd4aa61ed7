"""``connectif_coupons`` end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

from connectif_sync.state import StateStore
from tests.fixtures.dags import DagSandbox
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
    with StateStore(dag_sandbox.state_url) as store:
        rejected_ids = {int(r["source_ref"].split("=")[1]) for r in store.rejected("coupons")}
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
