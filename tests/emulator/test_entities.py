"""Contacts, products, purchases, coupon sets and workflows over HTTP (contract sections 7 to 10)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from emulator.testing import RunningEmulator

PRODUCT = {"name": "Shoe", "unitPrice": 10.5, "productDetailUrl": "https://shop.example.com/p1"}


def api(emu: RunningEmulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return emu.anon.request(method, emu.url(path), headers=emu.headers, **kwargs)


def purchase(purchase_id: str = "O1", email: str = "ann@example.com", **changes: Any) -> dict[str, Any]:
    body = {
        "purchaseId": purchase_id,
        "contactEmail": email,
        "cartId": "C1",
        "paymentMethod": "card",
        "purchaseDate": "2026-05-01T10:00:00+02:00",
        "totalPrice": 21.0,
        "totalQuantity": 2,
        "products": [{"productId": "P1", **PRODUCT, "quantity": 2, "price": 21.0}],
    }
    return {**body, **changes}


def test_patch_contact_upserts_and_get_reads(emulator: RunningEmulator) -> None:
    assert api(emulator, "GET", "/contacts/ann@example.com").status_code == 404
    created = api(emulator, "PATCH", "/contacts/ann%40example.com", json={"_name": "Ann", "_points": 2, "tier": "gold"})
    assert created.status_code == 200
    body = created.json()
    assert body["_email"] == "ann@example.com" and len(body["id"]) == 24 and body["_createdAt"] and body["_updatedAt"]
    assert body["_totalPurchases"] == 0
    updated = api(
        emulator, "PATCH", "/contacts/email/Ann@Example.com", json={"_externalId": "E1", "_emailStatus": "active"}
    )
    assert updated.status_code == 200 and updated.json()["id"] == body["id"]
    got = api(emulator, "GET", "/contacts/ann%2540example.com").json()  # encoded twice
    assert (got["_name"], got["_points"], got["tier"], got["_externalId"]) == ("Ann", 2, "gold", "E1")
    assert len(emulator.admin.contacts()) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"_birthdate": "01/02/1990"}, "_birthdate"),
        ({"_points": "007"}, "_points"),
        ({"_points": 1.5}, "_points"),
        ({"_emailStatus": "gone"}, "_emailStatus"),
        ({"_newsletterSubscriptionStatus": "yes"}, "_newsletterSubscriptionStatus"),
        ({"_mobilePhone": "600 111 222"}, "_mobilePhone"),
        ({"_totalPurchases": 3}, "_totalPurchases"),
        ({"custom": {"nested": True}}, "custom"),
    ],
)
def test_patch_contact_validation(emulator: RunningEmulator, body: dict[str, Any], field: str) -> None:
    response = api(emulator, "PATCH", "/contacts/ann@example.com", json=body)
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["validationErrors"]] == [field]
    assert emulator.admin.contacts() == []


def test_unknown_contact_and_product_fields_are_ignored_unless_strict(emulator: RunningEmulator) -> None:
    contact = api(emulator, "PATCH", "/contacts/ann@example.com", json={"_name": "Ann", "_unknown": "x"})
    assert contact.status_code == 200, contact.text
    assert contact.json()["_name"] == "Ann" and "_unknown" not in contact.json()
    product = api(emulator, "PATCH", "/products/product-id/P1", json={**PRODUCT, "colour": "red"})
    assert product.status_code == 200, product.text
    assert product.json()["name"] == "Shoe" and "colour" not in product.json()

    emulator.admin.configure(strict_unknown_fields=True)
    contact = api(emulator, "PATCH", "/contacts/ann@example.com", json={"_name": "Bea", "_unknown": "x"})
    assert contact.status_code == 422
    assert [e["path"] for e in contact.json()["validationErrors"]] == ["_unknown"]
    product = api(emulator, "PATCH", "/products/product-id/P1", json={"unitPrice": 9, "colour": "red"})
    assert product.status_code == 422
    assert [e["path"] for e in product.json()["validationErrors"]] == ["colour"]
    # nothing was written by the refused requests; custom contact fields (no leading _) stay open
    assert [c["_name"] for c in emulator.admin.contacts()] == ["Ann"]
    assert [p["unitPrice"] for p in emulator.admin.products()] == [10.5]
    assert api(emulator, "PATCH", "/contacts/ann@example.com", json={"tier": "gold"}).json()["tier"] == "gold"


def test_patch_contact_bad_email_and_body(emulator: RunningEmulator) -> None:
    assert api(emulator, "PATCH", "/contacts/not-an-email", json={}).status_code == 422
    assert api(emulator, "PATCH", "/contacts/a@example.com", json=[1, 2]).status_code == 422
    assert api(emulator, "PATCH", "/contacts/a@example.com", json={"_email": "b@example.com"}).status_code == 422
    assert api(emulator, "PATCH", "/contacts/a@example.com", content=b"{}").status_code == 415


def test_delete_contact_keeps_purchases_drops_activities(emulator: RunningEmulator) -> None:
    api(emulator, "PATCH", "/contacts/ann@example.com", json={"_name": "Ann"})
    emulator.admin.seed_products([{"productId": "P1", **PRODUCT}])
    assert api(emulator, "POST", "/purchases", json=purchase()).status_code == 201
    emulator.admin.seed_activities([{"contactEmail": "ann@example.com", "type": "login"}])
    assert len(emulator.admin.activities()) == 2
    assert api(emulator, "DELETE", "/contacts/email/ann@example.com").status_code == 204
    assert api(emulator, "DELETE", "/contacts/email/ann@example.com").status_code == 404
    assert emulator.admin.activities() == []
    assert [p["purchaseId"] for p in emulator.admin.purchases()] == ["O1"]
    recreated = api(emulator, "PATCH", "/contacts/ann@example.com", json={}).json()
    assert recreated["_totalPurchases"] == 1  # statistics stay with the purchases


def test_product_create_update_get_delete(emulator: RunningEmulator) -> None:
    response = api(
        emulator, "PATCH", "/products/product-id/P1", json={**PRODUCT, "tags": ["a"], "isBlacklisted": False}
    )
    assert response.status_code == 200
    created = response.json()
    assert created["productId"] == "P1" and created["tags"] == ["a"]
    updated = api(emulator, "PATCH", "/products/product-id/P1", json={"unitPrice": 9}).json()
    assert updated["unitPrice"] == 9 and updated["name"] == "Shoe" and updated["id"] == created["id"]
    assert api(emulator, "GET", "/products/product-id/P1").json()["unitPrice"] == 9
    assert api(emulator, "DELETE", "/products/product-id/P1").status_code == 204
    assert api(emulator, "GET", "/products/product-id/P1").status_code == 404
    assert api(emulator, "DELETE", "/products/product-id/P1").status_code == 404


def test_product_validation_and_e0201(emulator: RunningEmulator) -> None:
    missing = api(emulator, "PATCH", "/products/product-id/P1", json={"name": "Shoe"})
    assert missing.status_code == 422
    assert {e["path"] for e in missing.json()["validationErrors"]} == {"unitPrice", "productDetailUrl"}
    bad = api(emulator, "PATCH", "/products/product-id/P1", json={**PRODUCT, "unitPrice": "ten"})
    assert bad.status_code == 422
    assert {e["path"] for e in bad.json()["validationErrors"]} == {"unitPrice"}
    outside = api(
        emulator, "PATCH", "/products/product-id/P1", json={**PRODUCT, "productDetailUrl": "https://evil.test/1"}
    )
    assert outside.status_code == 400
    assert outside.json()["code"] == "E0201" and outside.json()["allowedDomains"] == ["example.com"]
    assert emulator.admin.products() == []
    emulator.admin.configure(authorized_domains=["evil.test"])
    moved = api(
        emulator, "PATCH", "/products/product-id/P1", json={**PRODUCT, "productDetailUrl": "https://evil.test/1"}
    )
    assert moved.status_code == 200


def test_purchase_lifecycle_and_aggregates(emulator: RunningEmulator) -> None:
    api(emulator, "PATCH", "/contacts/ann@example.com", json={})
    emulator.admin.seed_products([{"productId": "P1", **PRODUCT}])
    first = api(emulator, "POST", "/purchases?triggerPurchaseEvent=false", json=purchase())
    assert first.status_code == 201
    assert first.json()["purchaseId"] == "O1" and first.json()["purchaseDate"] == "2026-05-01T08:00:00.000Z"
    assert (
        api(
            emulator, "POST", "/purchases/", json=purchase("O2", purchaseDate="2026-06-01T00:00:00Z", totalPrice=9)
        ).status_code
        == 201
    )
    contact = api(emulator, "GET", "/contacts/ann@example.com").json()
    assert contact["_totalPurchases"] == 2 and contact["_totalPurchasesAmount"] == 30.0
    assert contact["_averagePurchasesAmount"] == 15.0
    assert contact["_firstPurchaseDate"] == "2026-05-01T08:00:00.000Z"
    assert contact["_lastPurchaseDate"] == "2026-06-01T00:00:00.000Z"
    assert api(emulator, "GET", "/purchases/purchase-id/O1").json()["cartId"] == "C1"
    assert api(emulator, "DELETE", "/purchases/purchase-id/O1").status_code == 204
    assert api(emulator, "GET", "/purchases/purchase-id/O1").status_code == 404
    assert api(emulator, "DELETE", "/purchases/purchase-id/O1").status_code == 404
    assert api(emulator, "GET", "/contacts/ann@example.com").json()["_totalPurchases"] == 1


def test_purchase_errors(emulator: RunningEmulator) -> None:
    emulator.admin.seed_products([{"productId": "P1", **PRODUCT}])
    no_contact = api(emulator, "POST", "/purchases", json=purchase())
    assert no_contact.status_code == 400 and no_contact.json()["code"] == "E0101"
    api(emulator, "PATCH", "/contacts/ann@example.com", json={})
    unknown = purchase(products=[{"productId": "P9", **PRODUCT, "quantity": 1, "price": 1}])
    response = api(emulator, "POST", "/purchases", json=unknown)
    assert (
        response.status_code == 400 and response.json()["code"] == "E0102" and response.json()["productIds"] == ["P9"]
    )
    outside = purchase(
        products=[{"productId": "P1", **PRODUCT, "productDetailUrl": "https://evil.test/", "quantity": 1, "price": 1}]
    )
    response = api(emulator, "POST", "/purchases", json=outside)
    assert response.status_code == 400 and response.json()["code"] == "E0103"
    assert api(emulator, "POST", "/purchases", json=purchase()).status_code == 201
    duplicate = api(emulator, "POST", "/purchases", json=purchase())
    assert duplicate.status_code == 409 and duplicate.json()["status"] == 409
    assert len(emulator.admin.purchases()) == 1
    emulator.admin.configure(duplicate_purchase_status=400)
    replay = api(emulator, "POST", "/purchases", json=purchase())
    assert replay.status_code == 400 and "already exists" in replay.json()["detail"]


@pytest.mark.parametrize(
    "changes",
    [
        {"purchaseId": ""},
        {"totalPrice": "21"},
        {"totalPrice": -1},
        {"purchaseDate": "yesterday"},
        {"contactEmail": "nope"},
        {"products": []},
        {"products": [{"productId": "P1", "quantity": 0}]},
        {"cartId": None},
    ],
)
def test_purchase_validation(emulator: RunningEmulator, changes: dict[str, Any]) -> None:
    response = api(emulator, "POST", "/purchases", json=purchase(**changes))
    assert response.status_code == 422 and response.json()["validationErrors"]


def test_purchase_trigger_flag_must_be_boolean(emulator: RunningEmulator) -> None:
    assert api(emulator, "POST", "/purchases?triggerPurchaseEvent=maybe", json=purchase()).status_code == 422


def test_coupon_sets_and_workflows(emulator: RunningEmulator) -> None:
    multiple = emulator.admin.create_coupon_set(name="Welcome", codes=["A", "B", "C"])
    single = emulator.admin.create_coupon_set(name="Summer", type="single", code="SUMMER10")
    workflow = emulator.admin.create_workflow(name="Welcome flow", status="active", coupon_set_ids=[multiple["id"]])
    emulator.admin.assign_coupons(multiple["id"], 2)
    listed = api(emulator, "GET", "/coupon-sets").json()
    assert [s["id"] for s in listed["results"]] == [single["id"], multiple["id"]]
    got = api(emulator, "GET", f"/coupon-sets/{multiple['id']}").json()
    assert (got["quantity"], got["available"], got["assigned"]) == (3, 1, 2)
    assert got["usedInWorkflows"] == [{"workflowId": workflow["id"]}] and got["type"] == "multiple"
    assert api(emulator, "GET", f"/coupon-sets/{single['id']}").json()["code"] == "SUMMER10"
    flow = api(emulator, "GET", f"/workflows/{workflow['id']}").json()
    assert flow == {"id": workflow["id"], "name": "Welcome flow", "status": "active"}
    assert api(emulator, "GET", "/workflows/000000000000000000000000").status_code == 404
    assert api(emulator, "GET", "/coupon-sets/000000000000000000000000").status_code == 404


def test_coupon_counts_lag(emulator: RunningEmulator) -> None:
    emulator.admin.configure(coupon_counts_lag_s=0.6)
    coupon_set = emulator.admin.create_coupon_set(codes=["A"])
    time.sleep(0.7)
    emulator.admin.assign_coupons(coupon_set["id"], 1)
    lagging = api(emulator, "GET", f"/coupon-sets/{coupon_set['id']}").json()
    assert (lagging["available"], lagging["assigned"]) == (1, 0)
    time.sleep(0.7)
    current = api(emulator, "GET", f"/coupon-sets/{coupon_set['id']}").json()
    assert (current["available"], current["assigned"]) == (0, 1)


def test_other_accounts_are_invisible(emulator: RunningEmulator) -> None:
    other = emulator.admin.create_account(name="Other", authorizedDomains=["other.test"])
    key = emulator.admin.create_key(account_id=other["id"])
    other_headers = {"Authorization": f"apiKey {key}"}
    api(emulator, "PATCH", "/contacts/ann@example.com", json={"_name": "Ann"})
    assert emulator.anon.get(emulator.url("/contacts/ann@example.com"), headers=other_headers).status_code == 404
    coupon_set = emulator.admin.create_coupon_set()
    assert emulator.anon.get(emulator.url(f"/coupon-sets/{coupon_set['id']}"), headers=other_headers).status_code == 404
    response = emulator.anon.patch(emulator.url("/products/product-id/P1"), headers=other_headers, json=PRODUCT)
    assert response.json()["code"] == "E0201" and response.json()["allowedDomains"] == ["other.test"]


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/contacts/a@example.com", "contact:read"),
        ("PATCH", "/contacts/a@example.com", "contact:write"),
        ("DELETE", "/contacts/email/a@example.com", "contact:delete"),
        ("GET", "/products/product-id/P1", "product:read"),
        ("PATCH", "/products/product-id/P1", "product:write"),
        ("POST", "/purchases", "purchase:write"),
        ("GET", "/purchases/purchase-id/O1", "purchase:read"),
        ("GET", "/coupon-sets", "coupon-set:read"),
        ("GET", "/workflows/x", "workflow:read"),
        ("DELETE", "/imports/x", "import:delete"),
        ("GET", "/exports", "export:read"),
    ],
)
def test_every_endpoint_checks_its_scope(emulator: RunningEmulator, method: str, path: str, scope: str) -> None:
    key = emulator.admin.create_key(scopes=[])
    response = emulator.anon.request(method, emulator.url(path), headers={"Authorization": f"apiKey {key}"}, json={})
    assert response.status_code == 403
    assert response.json()["requiredScopes"] == [scope]
