"""``connectif_contacts`` and ``connectif_products`` end to end through ``dag.test()`` against the emulator.

After a run, Connectif (the emulator) holds exactly the ERP's valid rows; every dirty row that Connectif
would reject is in the rejected store with its reason; a second run sends nothing; a dry run writes nothing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from connectif_sync.state import StateStore
from tests.fixtures.dags import DagSandbox
from tests.fixtures.sql import query

# Dirty kinds of the sample ERP that make a row unacceptable to Connectif (the others are shaped into valid rows).
REJECTED_CUSTOMERS = {"invalid_email", "null_email", "duplicate_email", "long_name", "invalid_phone"}
REJECTED_PRODUCTS = {"negative_price", "null_name", "null_price", "long_name", "duplicate_sku"}


def erp_rows(sandbox: DagSandbox, sql: str) -> list[dict[str, Any]]:
    return query(sandbox.erp_url, sql)


def rejected_ids(sandbox: DagSandbox, obj: str) -> dict[int, str]:
    with StateStore(sandbox.state_url) as store:
        rows = store.rejected(obj)
    out = {}
    for r in rows:
        assert r["reason"], r
        assert r["source_ref"] and r["source_ref"].startswith("id="), r
        out[int(r["source_ref"].split("=")[1].split(",")[0])] = r["reason"]
    return out


def asset_extra(uri: str) -> dict[str, Any]:
    """The ``extra`` of the latest event of an Asset (Airflow's metadata DB of the test session; Airflow stores
    ``connectif://contacts`` normalised with a trailing slash)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        event = session.scalars(
            sa.select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri.in_([uri, uri + "/"])).order_by(AssetEvent.id.desc()).limit(1)
        ).one()  # fmt: skip
        return dict(event.extra)


def dirty(sandbox: DagSandbox, table: str, kinds: set[str]) -> set[int]:
    return {i for kind in kinds for i in sandbox.generated["dirty"][table][kind]}


def test_contacts_sync_sends_exactly_the_valid_rows_then_nothing(dag_sandbox: DagSandbox) -> None:
    state, summary = dag_sandbox.run("connectif_contacts")

    assert state == "success", summary
    bad = dirty(dag_sandbox, "customers", REJECTED_CUSTOMERS)
    assert set(rejected_ids(dag_sandbox, "contacts")) == bad
    customers = erp_rows(dag_sandbox, "SELECT id, email, first_name, last_name, customer_code FROM customers")
    expected = {c["email"].strip().lower(): c for c in customers if c["id"] not in bad}
    stored = {c["_email"]: c for c in dag_sandbox.emulator.admin.contacts()}
    assert set(stored) == set(expected)
    for email, c in expected.items():
        assert stored[email].get("_name") == c["first_name"], email
        assert stored[email].get("_surname") == c["last_name"], email
        assert stored[email].get("_externalId") == c["customer_code"], email
    assert summary["sent"] == len(expected)
    assert summary["rejected"] == len(bad)
    assert summary["imports"] == 1
    # the same summary is in the run history (what the Connectif pages read) and on the Asset event
    with StateStore(dag_sandbox.state_url, readonly=True) as store:
        recorded = store.run_summary("connectif_contacts", summary["run_id"])
    assert recorded is not None and recorded.as_dict() == summary
    assert recorded.import_outcomes[0].total == len(expected) and recorded.state.value == "success"
    assert asset_extra("connectif://contacts") == {
        "object": "contacts", "run_id": summary["run_id"], "to_send": summary["to_send"], "sent": len(expected),
        "new": summary["new"], "changed": 0, "unchanged": 0, "rejected": len(bad), "imports": 1,
    }  # fmt: skip
    imports_after_first = len(dag_sandbox.emulator.admin.imports())

    state, summary = dag_sandbox.run("connectif_contacts")

    assert state == "success"
    assert summary["sent"] == 0
    assert summary["to_send"] == 0
    assert summary["unchanged"] == len(expected)
    assert summary["imports"] == 0
    assert len(dag_sandbox.emulator.admin.imports()) == imports_after_first


def test_products_sync_sends_exactly_the_valid_rows_then_nothing(dag_sandbox: DagSandbox) -> None:
    state, summary = dag_sandbox.run("connectif_products")

    assert state == "success", summary
    bad = dirty(dag_sandbox, "products", REJECTED_PRODUCTS)
    assert set(rejected_ids(dag_sandbox, "products")) == bad
    products = erp_rows(dag_sandbox, "SELECT id, sku, name, url FROM products")
    expected = {p["sku"]: p for p in products if p["id"] not in bad}
    stored = {p["productId"]: p for p in dag_sandbox.emulator.admin.products()}
    assert set(stored) == set(expected)
    for sku, p in expected.items():
        assert stored[sku]["name"] == p["name"]
        assert stored[sku]["productDetailUrl"] == p["url"]
    assert summary["sent"] == len(expected)

    state, summary = dag_sandbox.run("connectif_products")

    assert state == "success"
    assert summary["to_send"] == 0
    assert summary["imports"] == 0


def test_dry_run_plans_without_writing_anything(dag_sandbox: DagSandbox) -> None:
    state, summary = dag_sandbox.run("connectif_contacts", dry_run=True)

    assert state == "success"
    assert summary["dry_run"] is True
    assert summary["to_send"] > 0
    assert summary["files"] == 1
    assert summary["api_requests"]["imports"] == 1
    assert dag_sandbox.emulator.admin.imports() == []
    assert dag_sandbox.emulator.admin.contacts() == []
    with StateStore(dag_sandbox.state_url) as store:
        assert store.confirmed("contacts") == {} or not store.confirmed("contacts")
        assert store.rejected("contacts") == []


def test_full_resync_sends_unchanged_rows_again(dag_sandbox: DagSandbox) -> None:
    dag_sandbox.run("connectif_products")

    state, summary = dag_sandbox.run("connectif_products", full_resync=True)

    assert state == "success"
    assert summary["unchanged"] == summary["to_send"] == summary["sent"] > 0
    assert summary["imports"] == 1
