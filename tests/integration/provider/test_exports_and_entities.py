"""Exports and the entity endpoints of the hook against the running emulator (real HTTP)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import TaskDeferred

from connectif_provider.exceptions import (
    ConnectifMissingContactError,
    ConnectifMissingProductError,
    ConnectifPermissionError,
)
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.operators.connectif import ConnectifExportOperator
from connectif_provider.triggers.connectif import ConnectifQueueSlotTrigger
from emulator.testing import RunningEmulator
from tests.fixtures.provider import DictStore, run_deferred


def test_activities_export_over_31_days_is_split_and_downloaded(
    emu_conn: str, emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.admin.seed_contacts([{"_email": "a@example.com"}, {"_email": "b@example.com"}])
    emulator.admin.seed_activities(
        [
            {"contactEmail": "a@example.com", "type": "login", "date": "2024-01-05T10:00:00Z"},
            {"contactEmail": "b@example.com", "type": "login", "date": "2024-02-20T10:00:00Z"},
        ]
    )
    op = ConnectifExportOperator(
        task_id="exp",
        export_type="activities",
        output_dir=str(tmp_path / "out"),
        from_date="2024-01-01T00:00:00Z",
        to_date="2024-03-01T00:00:00Z",
        connectif_conn_id=emu_conn,
        poll_interval=0.2,
    )
    store = DictStore()
    result = run_deferred(op, {"task_state_store": store})
    assert len(result["export_ids"]) == 2
    assert len(emulator.admin.exports()) == 2
    files = [Path(f) for f in result["files"]]
    assert files and all(f.is_file() and f.suffix == ".csv" for f in files)
    main_files = [f for f in files if not f.name.endswith("-products.csv")]
    emails = set()
    for path in main_files:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            emails |= {row.get("contactEmail") or row.get("email") or "" for row in csv.DictReader(fh)}
    assert {"a@example.com", "b@example.com"} <= emails


def test_full_export_queue_waits_for_a_slot(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.admin.configure(max_queued_exports=1, export_processing_s=3.0)
    ConnectifHook(emu_conn).create_export("contacts")
    op = ConnectifExportOperator(
        task_id="exp",
        export_type="contacts",
        output_dir=str(tmp_path / "out"),
        connectif_conn_id=emu_conn,
        poll_interval=0.2,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"task_state_store": DictStore()})
    assert isinstance(deferred.value.trigger, ConnectifQueueSlotTrigger)
    result = run_deferred(op, {"task_state_store": DictStore()})
    assert len(result["export_ids"]) == 1 and result["files"]


def test_expired_export_link_is_fetched_again(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    """A link that expired between reading the export and downloading it: the export is read again."""
    emulator.admin.seed_contacts([{"_email": "a@example.com"}])
    hook = ConnectifHook(emu_conn)
    export_id = str(hook.create_export("contacts")["id"])
    deadline = time.monotonic() + 30
    while hook.get_export(export_id)["status"] != "finished":
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.1)
    emulator.admin.configure(presigned_url_ttl_s=0.001)
    urls: list[str] = []
    read_url = hook._export_file_url

    def slow_worker(eid: str) -> str:
        url = read_url(eid)
        urls.append(url)
        if len(urls) == 1:
            emulator.admin.configure(presigned_url_ttl_s=600)
            time.sleep(1.1)  # the first link expires before it is used
        return url

    with mock.patch.object(hook, "_export_file_url", side_effect=slow_worker):
        paths = hook.download_export(export_id, tmp_path / "out")
    assert len(urls) == 2 and urls[0] != urls[1]
    assert paths and all(p.is_file() and p.suffix == ".csv" for p in paths)
    with pytest.raises(ConnectifPermissionError, match="expired"):
        ConnectifHook(emu_conn)._stream_to(urls[0], tmp_path / "stale.zip")


def test_entities(emu_conn: str, emulator: RunningEmulator) -> None:
    hook = ConnectifHook(emu_conn)
    hook.upsert_contact("ann+x@example.com", {"_name": "Ann"})
    contact = hook.get_contact("ann+x@example.com")
    assert contact is not None and contact["_name"] == "Ann"
    product = {
        "name": "Shoe",
        "productDetailUrl": "https://www.example.com/p/1",
        "unitPrice": 10.0,
    }
    hook.upsert_product("p1", product)
    assert (hook.get_product("p1") or {}).get("name") == "Shoe"
    purchase = {
        "purchaseId": "o-1",
        "contactEmail": "ann+x@example.com",
        "cartId": "c-1",
        "purchaseDate": "2024-01-01T10:00:00Z",
        "totalPrice": 20.0,
        "totalQuantity": 2,
        "products": [{**product, "productId": "p1", "quantity": 2, "price": 20.0}],
    }
    assert hook.create_purchase(purchase)["duplicate"] is False
    assert hook.create_purchase(purchase) == {"purchaseId": "o-1", "duplicate": True}
    assert len(emulator.admin.purchases()) == 1
    assert hook.get_purchase("o-1") is not None
    with pytest.raises(ConnectifMissingContactError):
        hook.create_purchase({**purchase, "purchaseId": "o-2", "contactEmail": "nobody@example.com"})
    with pytest.raises(ConnectifMissingProductError) as info:
        bad_line = {**product, "productId": "nope", "quantity": 1, "price": 10.0}
        hook.create_purchase({**purchase, "purchaseId": "o-3", "products": [bad_line]})
    assert "nope" in info.value.product_ids
    assert hook.delete_purchase("o-1") is True
    assert hook.delete_contact("ann+x@example.com") is True
    assert hook.delete_contact("ann+x@example.com") is False
    assert hook.delete_product("p1") is True

    coupon_set = emulator.admin.create_coupon_set(name="Spring", codes=["A1", "A2"])
    workflow = emulator.admin.create_workflow(name="Welcome", coupon_set_ids=[coupon_set["id"]])
    assert coupon_set["id"] in [c["id"] for c in hook.list_coupon_sets()]
    assert hook.get_coupon_set(coupon_set["id"])["name"] == "Spring"
    assert hook.get_workflow(workflow["id"])["status"] == "active"


def test_coupons_import_and_test_connection(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    hook = ConnectifHook(emu_conn)
    assert hook.test_connection()[0] is True
    coupon_set = emulator.admin.create_coupon_set(name="Codes")
    path = tmp_path / "codes.csv"
    path.write_text("code\nC-1\nC-2\n", encoding="utf-8")
    created = hook.create_import(path, "coupons", coupon_set_id=coupon_set["id"])
    done = emulator.admin.wait_import(created["id"])
    assert done["status"] == "finished" and done["success"] == 2
    assert sorted(c["code"] for c in emulator.admin.coupon_codes(coupon_set["id"])) == ["C-1", "C-2"]


def test_wrong_key_is_an_authentication_error(emulator: RunningEmulator, connectif_conn: Any) -> None:
    from connectif_provider.exceptions import ConnectifAuthenticationError

    conn_id = connectif_conn(base_url=emulator.base_url, api_key="000000000000000000000000:wrong")
    ok, message = ConnectifHook(conn_id).test_connection()
    assert ok is False and "401" in message
    with pytest.raises(ConnectifAuthenticationError):
        ConnectifHook(conn_id).get_import("6072374b4d3ceb76e44d4323")


def test_the_hook_sends_only_documented_fields(emu_conn: str, emulator: RunningEmulator, tmp_path: Path) -> None:
    """Against a strict emulator (any field the contract does not name is a 422), every body the hook builds passes."""
    emulator.admin.configure(strict_unknown_fields=True)
    hook = ConnectifHook(emu_conn)
    hook.upsert_contact("ann@example.com", {"_name": "Ann", "tier": "gold"})
    hook.upsert_product("p1", {"name": "Shoe", "productDetailUrl": "https://www.example.com/p/1", "unitPrice": 10.0})
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("_email,_name\nbob@example.com,Bob\n", encoding="utf-8")
    created = hook.create_import(contacts, "contacts", override_existing=True, update_only_empty_fields=True)
    assert emulator.admin.wait_import(created["id"])["success"] == 1
    coupon_set = emulator.admin.create_coupon_set(name="Codes")
    codes = tmp_path / "codes.csv"
    codes.write_text("code\nC-1\n", encoding="utf-8")
    assert emulator.admin.wait_import(hook.create_import(codes, "coupons", coupon_set_id=coupon_set["id"])["id"])
    emulator.admin.seed_activities(
        [
            {"contactEmail": "ann@example.com", "type": "login", "date": "2024-01-05T10:00:00Z"},
            {"contactEmail": "bob@example.com", "type": "register", "date": "2024-01-06T10:00:00Z"},
        ]
    )
    activities = hook.create_export(
        "activities",
        segment_id="64b7f0c2a1b2c3d4e5f60718",
        from_date="2024-01-01T00:00:00Z",
        to_date="2024-01-31T00:00:00Z",
        activity_types=["register"],
    )
    assert activities["filters"]["activityTypes"] == ["register"]
    emulator.admin.wait_export(activities["id"])
    files = hook.download_export(activities["id"], tmp_path / "activities")
    (main,) = [f for f in files if not f.name.endswith("-products.csv")]
    with main.open(encoding="utf-8-sig", newline="") as fh:
        assert [(r["type"], r["contactEmail"]) for r in csv.DictReader(fh)] == [("register", "bob@example.com")]
    hook.create_export("contacts", delimiter=";", date_format="LL")
    hook.create_export("data-explorer", report_id="R1", from_date="2024-01-01", to_date="2024-01-31")
    assert len(emulator.admin.exports()) == 3
    assert sorted(c["_email"] for c in emulator.admin.contacts()) == ["ann@example.com", "bob@example.com"]
