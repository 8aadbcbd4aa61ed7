"""``connectif_purchases`` end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from connectif_sync.state import StateStore
from tests.fixtures.dags import DagSandbox
from tests.fixtures.sql import query


def paid_orders(sandbox: DagSandbox) -> dict[str, dict[str, Any]]:
    rows = query(
        sandbox.erp_url,
        "SELECT o.order_number, o.customer_id, COUNT(l.id) AS line_count, SUM(l.quantity) AS quantity "
        "FROM orders o JOIN order_lines l ON l.order_id = o.id WHERE o.status = 'paid' "
        "GROUP BY o.order_number, o.customer_id",
    )
    return {r["order_number"]: r for r in rows}


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
        assert len(purchase["products"]) == orders[pid]["line_count"]
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


def test_purchases_of_an_erased_contact_are_kept_without_recreating_it(dag_sandbox: DagSandbox) -> None:
    engine = sa.create_engine(dag_sandbox.erp_url)
    with engine.connect() as conn:
        emails = [
            str(e).strip().lower()
            for (e,) in conn.execute(
                sa.text("SELECT c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid'")
            )
            if e and "@" in str(e) and " " not in str(e).strip()
        ]
    engine.dispose()
    erased = emails[0]
    with StateStore(dag_sandbox.state_url) as store:
        store.suppress("contacts", [erased], "erasure request id=1")
    # dry_run=False explicitly: a dry run at the same logical date earlier in this session leaves its conf
    # to later dag.test() runs of that DAG (Airflow's shared metadata database in the test session).

    state, summary = dag_sandbox.run("connectif_purchases", trigger_purchase_event=False, dry_run=False)

    assert state == "success", summary
    assert erased not in {c["_email"] for c in dag_sandbox.emulator.admin.contacts()}
    assert not [p for p in dag_sandbox.emulator.admin.purchases() if p["contactEmail"] == erased]
    assert summary["kept"] == emails.count(erased) and summary["sent"] > 0
    assert any("suppressed" in note for note in summary["notes"])

    with StateStore(dag_sandbox.state_url) as store:  # the erasure withdrawn: they go with the next run
        store.unsuppress("contacts", [erased])
    state, again = dag_sandbox.run("connectif_purchases", trigger_purchase_event=False, dry_run=False)
    assert state == "success" and again["sent"] == summary["kept"] and again["kept"] == 0
    assert erased in {c["_email"] for c in dag_sandbox.emulator.admin.contacts()}
