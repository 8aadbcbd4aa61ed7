"""``connectif_purchases`` end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from connectif_sync.state import StateStore
from tests.fixtures.dags import DagSandbox


def paid_orders(sandbox: DagSandbox) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(sandbox.erp_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT o.order_number, o.customer_id, COUNT(l.id) AS lines, SUM(l.quantity) AS quantity "
                    "FROM orders o JOIN order_lines l ON l.order_id = o.id WHERE o.status = 'paid' "
                    "GROUP BY o.order_number, o.customer_id"
                )
            )
            return {r.order_number: dict(r._mapping) for r in rows}
    finally:
        engine.dispose()


def test_purchases_reach_connectif_even_before_their_contacts_and_products(dag_sandbox: DagSandbox) -> None:
    # Nothing synced yet: every purchase first meets E0101 (contact) and E0102 (products), which the DAG repairs.
    state, summary = dag_sandbox.run("connectif_purchases", trigger_purchase_event=False)

    assert state == "success", summary
    orders = paid_orders(dag_sandbox)
    with StateStore(dag_sandbox.state_url) as store:
        rejected = {r["key"]: r["reason"] for r in store.rejected("purchases")}
    assert all(rejected.values())
    stored = {p["purchaseId"]: p for p in dag_sandbox.emulator.admin.purchases()}
    assert set(stored) | set(rejected) == set(orders)  # nothing lost
    assert not set(stored) & set(rejected)
    assert len(stored) > 0
    for pid, purchase in stored.items():
        assert len(purchase["products"]) == orders[pid]["lines"]
        assert purchase["totalQuantity"] == orders[pid]["quantity"]
    assert summary["sent"] == len(stored)
    assert summary["rejected"] == len(rejected)
    assert summary["kept"] == 0
    assert summary["contacts_upserted"] > 0
    assert summary["products_upserted"] > 0

    state, summary = dag_sandbox.run("connectif_purchases", trigger_purchase_event=False)

    assert state == "success"
    assert summary["to_send"] == 0
    assert summary["sent"] == 0
    assert summary["unchanged"] == len(stored)
    assert len(dag_sandbox.emulator.admin.purchases()) == len(stored)


def test_unsendable_purchases_are_kept_and_sent_by_a_later_run(dag_sandbox: DagSandbox) -> None:
    # Product URLs outside the account's authorised domains: E0201 on upsert, so nothing can be sent yet.
    dag_sandbox.emulator.admin.configure(authorized_domains=["other.example.org"])

    state, summary = dag_sandbox.run("connectif_purchases", trigger_purchase_event=False)

    assert state == "success"
    assert summary["sent"] == 0
    assert summary["kept"] == summary["to_send"] > 0
    assert dag_sandbox.emulator.admin.purchases() == []

    dag_sandbox.emulator.admin.configure(authorized_domains=["example.com"])
    state, again = dag_sandbox.run("connectif_purchases", trigger_purchase_event=False)

    assert state == "success"
    assert again["kept"] == 0
    assert again["sent"] == summary["kept"]


def test_purchases_dry_run_sends_nothing(dag_sandbox: DagSandbox) -> None:
    state, summary = dag_sandbox.run("connectif_purchases", dry_run=True)

    assert state == "success"
    assert summary["to_send"] > 0
    assert summary["api_requests"]["api_requests"] == summary["to_send"]
    assert dag_sandbox.emulator.admin.purchases() == []
    assert dag_sandbox.emulator.admin.contacts() == []
    with StateStore(dag_sandbox.state_url) as store:
        assert list(store.purchase_statuses()) == []
