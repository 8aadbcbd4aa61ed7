"""Exports: ZIPs of CSVs built from stored data, pre-signed expiring URLs, the 31-day rule, E0301 (contract 6)."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from typing import Any

import httpx
import pytest

from emulator.testing import RunningEmulator, start_emulator

RANGE = {"fromDate": "2026-03-01T00:00:00Z", "toDate": "2026-03-31T00:00:00Z"}


def seed(emu: RunningEmulator) -> None:
    emu.admin.seed_contacts(
        [{"_email": "ann@example.com", "_name": "Ann", "tier": "gold"}, {"_email": "bob@example.com", "_name": "Bob"}]
    )
    emu.admin.seed_products(
        [{"productId": "P1", "name": "Shoe", "productDetailUrl": "https://shop.example.com/p1", "unitPrice": 10}]
    )
    purchase = {
        "purchaseId": "O1",
        "contactEmail": "ann@example.com",
        "cartId": "C1",
        "purchaseDate": "2026-03-10T12:30:00Z",
        "totalPrice": 20,
        "totalQuantity": 2,
        "products": [
            {
                "productId": "P1",
                "name": "Shoe",
                "productDetailUrl": "https://shop.example.com/p1",
                "unitPrice": 10,
                "quantity": 2,
                "price": 20,
            }
        ],
    }
    assert emu.anon.post(emu.url("/purchases"), headers=emu.headers, json=purchase).status_code == 201
    emu.admin.seed_activities(
        [
            {"contactEmail": "bob@example.com", "type": "login", "date": "2026-03-05T08:00:00Z"},
            {"contactEmail": "bob@example.com", "type": "login", "date": "2026-04-05T08:00:00Z"},
        ]
    )


def create(emu: RunningEmulator, body: dict[str, Any], path: str = "/exports") -> httpx.Response:
    return emu.anon.post(emu.url(path), headers=emu.headers, json=body)


def download(emu: RunningEmulator, export_id: str) -> dict[str, list[dict[str, str]]]:
    emu.admin.wait_export(export_id)
    job = emu.anon.get(emu.url(f"/exports/{export_id}"), headers=emu.headers).json()
    assert job["status"] == "finished" and job["fileName"].endswith(".zip")
    response = emu.anon.get(job["fileUrl"])  # no API key: pre-signed
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    files = {}
    for name in archive.namelist():
        text = archive.read(name).decode("utf-8")
        assert text.startswith("\ufeff")
        delimiter = ";" if job["delimiter"] == ";" else ","
        files[name] = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter))
    return files


def test_contacts_export(emulator: RunningEmulator) -> None:
    seed(emulator)
    response = create(emulator, {"exportType": "contacts", "delimiter": ";", "dateFormat": "ISO", "version": "v1"})
    assert response.status_code == 201
    created = response.json()
    assert created["status"] == "queued" and created["exportType"] == "contacts" and "fileUrl" not in created
    files = download(emulator, created["id"])
    ((name, rows),) = files.items()
    assert name.startswith("export-contacts-") and name.endswith(".csv")
    by_email = {r["_email"]: r for r in rows}
    assert by_email["ann@example.com"]["tier"] == "gold"
    assert by_email["ann@example.com"]["_totalPurchases"] == "1"
    assert by_email["bob@example.com"]["_name"] == "Bob"


def test_activities_export_has_products_file_and_filters(emulator: RunningEmulator) -> None:
    seed(emulator)
    body = {"exportType": "activities", "delimiter": ",", "dateFormat": "L", "filters": RANGE}
    files = download(emulator, create(emulator, body).json()["id"])
    (products_name,) = [n for n in files if n.endswith("-products.csv")]
    stem = products_name.removesuffix("-products.csv")
    assert sorted(files) == sorted([products_name, f"{stem}.csv"]) and stem.startswith("export-activities-")
    activities = files[f"{stem}.csv"]
    assert sorted((a["type"], a["date"]) for a in activities) == [("login", "03/05/2026"), ("purchase", "03/10/2026")]
    (product,) = files[products_name]
    assert (product["productId"], product["quantity"], product["purchaseId"]) == ("P1", "2", "O1")
    only = {**body, "filters": {**RANGE, "activityTypes": ["purchase"]}}
    files = download(emulator, create(emulator, only).json()["id"])
    (main_name,) = [n for n in files if not n.endswith("-products.csv")]
    assert [a["type"] for a in files[main_name]] == ["purchase"]


def seed_more_types(emu: RunningEmulator) -> None:
    """Besides ``seed``: a register, an email-opened and a login in range, and a register out of range."""
    emu.admin.seed_activities(
        [
            {"contactEmail": "bob@example.com", "type": "register", "date": "2026-03-01T09:00:00Z"},
            {"contactEmail": "ann@example.com", "type": "email-opened", "date": "2026-03-11T09:00:00Z"},
            {"contactEmail": "ann@example.com", "type": "login", "date": "2026-03-12T09:00:00Z"},
            {"contactEmail": "ann@example.com", "type": "register", "date": "2026-02-01T09:00:00Z"},
        ]
    )


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize(
    "types",
    [
        {"activityTypes": ["purchase", "register"]},  # the reference's spelling (our client sends this one)
        {"activityType": ["purchase", "register"]},  # what connectif-2-gc-storage sends
        {"activityTypes": ["purchase"], "activityType": ["register", "purchase"]},  # both: the union
    ],
    ids=["activityTypes", "activityType", "both"],
)
def test_activities_export_holds_only_the_requested_types(
    emulator: RunningEmulator, types: dict[str, list[str]], strict: bool
) -> None:
    seed(emulator)
    seed_more_types(emulator)
    emulator.admin.configure(strict_unknown_fields=strict)
    body = {"exportType": "activities", "delimiter": ",", "dateFormat": "ISO", "filters": {**RANGE, **types}}
    response = create(emulator, body)
    assert response.status_code == 201, response.text
    assert response.json()["filters"] == {**RANGE, "activityTypes": ["purchase", "register"]}
    files = download(emulator, response.json()["id"])
    (main_name,) = [n for n in files if not n.endswith("-products.csv")]
    rows = files[main_name]
    assert sorted((r["type"], r["contactEmail"]) for r in rows) == [
        ("purchase", "ann@example.com"),
        ("register", "bob@example.com"),
    ]
    (products,) = [v for n, v in files.items() if n.endswith("-products.csv")]
    purchase_ids = {r["activityId"] for r in rows if r["type"] == "purchase"}
    assert [p["productId"] for p in products] == ["P1"] and {p["activityId"] for p in products} == purchase_ids


def test_activity_type_may_be_a_single_string(emulator: RunningEmulator) -> None:
    seed(emulator)
    seed_more_types(emulator)
    body = {"exportType": "activities", "filters": {**RANGE, "activityType": "login"}}
    files = download(emulator, create(emulator, body).json()["id"])
    (main_name,) = [n for n in files if not n.endswith("-products.csv")]
    assert sorted(r["date"] for r in files[main_name] if r["type"] == "login") == [
        "2026-03-05T08:00:00.000Z",
        "2026-03-12T09:00:00.000Z",
    ]
    assert {r["type"] for r in files[main_name]} == {"login"}


@pytest.mark.parametrize(
    ("path", "body", "unknown"),
    [
        (
            "/exports",
            {"exportType": "contacts", "filters": {"segmentId": "S1", "colour": "red"}, "priority": "high"},
            ["filters.colour", "priority"],
        ),
        (
            "/exports/type/data-explorer",
            {"delimiter": ",", "filters": {"reportId": "R1", "fromDate": "2026-03-01", "toDate": "2026-03-02", "x": 1}},
            ["filters.x"],
        ),
    ],
)
def test_unknown_export_fields_are_ignored_unless_strict(
    emulator: RunningEmulator, path: str, body: dict[str, Any], unknown: list[str]
) -> None:
    assert emulator.admin.settings()["strict_unknown_fields"] is False  # lenient is the default
    lenient = create(emulator, body, path)
    assert lenient.status_code == 201, lenient.text
    assert "colour" not in lenient.json()["filters"] and "x" not in lenient.json()["filters"]
    assert "priority" not in lenient.json()
    emulator.admin.configure(strict_unknown_fields=True)
    strict = create(emulator, body, path)
    assert strict.status_code == 422
    errors = strict.json()["validationErrors"]
    assert sorted(e["path"] for e in errors) == unknown
    assert {e["reason"] for e in errors} == {"Extra inputs are not permitted"}
    assert len(emulator.admin.exports()) == 1


def test_strict_fields_flag_sets_the_start_up_setting() -> None:
    with start_emulator(extra_args=["--strict-fields"]) as emu:
        emu.admin.reset()  # back to the start-up settings: still strict
        assert emu.admin.settings()["strict_unknown_fields"] is True
        refused = create(emu, {"exportType": "contacts", "filters": {"colour": "red"}})
        assert refused.status_code == 422 and refused.json()["validationErrors"][0]["path"] == "filters.colour"
        body = {"exportType": "activities", "filters": {**RANGE, "activityType": ["login"]}}
        assert create(emu, body).status_code == 201


def test_data_explorer_export(emulator: RunningEmulator) -> None:
    seed(emulator)
    body = {"delimiter": ",", "filters": {"reportId": "R1", "fromDate": "2026-03-09", "toDate": "2026-03-11"}}
    response = create(emulator, body, "/exports/type/data-explorer")
    assert response.status_code == 201 and response.json()["exportType"] == "data-explorer"
    ((_name, rows),) = download(emulator, response.json()["id"]).items()
    assert [(r["date"], r["purchases"]) for r in rows] == [
        ("2026-03-09", "0"),
        ("2026-03-10", "1"),
        ("2026-03-11", "0"),
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/exports",
            {
                "exportType": "activities",
                "filters": {"fromDate": "2026-01-01T00:00:00Z", "toDate": "2026-03-01T00:00:00Z"},
            },
        ),
        ("/exports", {"exportType": "activities"}),
        ("/exports", {"exportType": "orders"}),
        ("/exports", {"exportType": "contacts", "delimiter": "|"}),
        ("/exports", {"exportType": "contacts", "dateFormat": "YYYY"}),
        ("/exports", {"exportType": "contacts", "filters": {"fromDate": "yesterday", "toDate": "today"}}),
        (
            "/exports/type/data-explorer",
            {"filters": {"reportId": "R", "fromDate": "2026-01-01", "toDate": "2026-02-15"}},
        ),
        (
            "/exports/type/data-explorer",
            {"filters": {"reportId": "R", "fromDate": "2026-02-01", "toDate": "2026-01-15"}},
        ),
        ("/exports/type/data-explorer", {"delimiter": ","}),
    ],
)
def test_invalid_export_requests_are_422(emulator: RunningEmulator, path: str, body: dict[str, Any]) -> None:
    response = create(emulator, body, path)
    assert response.status_code == 422, response.text
    assert response.json()["validationErrors"]
    assert emulator.admin.exports() == []


def test_thirty_one_days_is_allowed(emulator: RunningEmulator) -> None:
    body = {
        "exportType": "activities",
        "filters": {"fromDate": "2026-01-01T00:00:00Z", "toDate": "2026-02-01T00:00:00Z"},
    }
    assert create(emulator, body).status_code == 201


def test_export_body_must_be_json(emulator: RunningEmulator) -> None:
    response = emulator.anon.post(emulator.url("/exports"), headers=emulator.headers, content=b"exportType=contacts")
    assert response.status_code == 415
    response = emulator.anon.post(
        emulator.url("/exports"), headers={**emulator.headers, "Content-Type": "application/json"}, content=b"{nope"
    )
    assert response.status_code == 400


def test_sixth_queued_export_gets_e0301(emulator: RunningEmulator) -> None:
    emulator.admin.configure(export_processing_s=30)
    for _ in range(5):
        assert create(emulator, {"exportType": "contacts"}).status_code == 201
    response = create(emulator, {"exportType": "contacts"})
    assert response.status_code == 400 and response.json()["code"] == "E0301"
    assert emulator.admin.stats()["maxQueuedExports"] == 5
    queued = emulator.anon.get(emulator.url("/exports"), headers=emulator.headers).json()["results"]
    deletes = [emulator.anon.delete(emulator.url(f"/exports/{e['id']}"), headers=emulator.headers) for e in queued]
    assert {d.status_code for d in deletes} == {409}


def test_each_get_mints_a_fresh_url_that_expires(emulator: RunningEmulator) -> None:
    emulator.admin.configure(presigned_url_ttl_s=2)
    export_id = create(emulator, {"exportType": "contacts"}).json()["id"]
    emulator.admin.wait_export(export_id)
    first = emulator.anon.get(emulator.url(f"/exports/{export_id}"), headers=emulator.headers).json()["fileUrl"]
    time.sleep(1.1)
    second = emulator.anon.get(emulator.url(f"/exports/{export_id}"), headers=emulator.headers).json()["fileUrl"]
    assert first != second
    assert emulator.anon.get(second).status_code == 200
    assert emulator.anon.get(second.replace("signature=", "signature=ab")).status_code == 403
    time.sleep(2.1)
    expired = emulator.anon.get(second)
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]


def test_delete_finished_export(emulator: RunningEmulator) -> None:
    export_id = create(emulator, {"exportType": "contacts"}).json()["id"]
    emulator.admin.wait_export(export_id)
    url = emulator.anon.get(emulator.url(f"/exports/{export_id}"), headers=emulator.headers).json()["fileUrl"]
    assert emulator.anon.delete(emulator.url(f"/exports/{export_id}"), headers=emulator.headers).status_code == 204
    assert emulator.anon.get(emulator.url(f"/exports/{export_id}"), headers=emulator.headers).status_code == 404
    assert emulator.anon.get(url).status_code == 404


def test_export_scopes(emulator: RunningEmulator) -> None:
    key = emulator.admin.create_key(scopes=["export:read"])
    response = emulator.anon.post(
        emulator.url("/exports"), headers={"Authorization": f"apiKey {key}"}, json={"exportType": "contacts"}
    )
    assert response.status_code == 403 and "export:write" in response.json()["detail"]
    assert emulator.anon.get(emulator.url("/exports/"), headers={"Authorization": f"apiKey {key}"}).status_code == 200


def test_list_exports_pages(emulator: RunningEmulator) -> None:
    ids = [create(emulator, {"exportType": "contacts"}).json()["id"] for _ in range(3)]
    first = emulator.anon.get(emulator.url("/exports?limit=2"), headers=emulator.headers).json()
    assert [e["id"] for e in first["results"]] == ids[:0:-1]
    second = emulator.anon.get(first["links"]["next"], headers=emulator.headers).json()
    assert [e["id"] for e in second["results"]] == ids[:1]


def test_presigned_url_refuses_the_api_key(emulator: RunningEmulator) -> None:
    export_id = create(emulator, {"exportType": "contacts"}).json()["id"]
    emulator.admin.wait_export(export_id)
    url = emulator.http.get(f"/exports/{export_id}").json()["fileUrl"]
    response = emulator.anon.get(url, headers=emulator.headers)
    assert response.status_code == 400 and "Authorization" in response.json()["detail"]
    emulator.admin.configure(presigned_rejects_authorization=False)
    assert emulator.anon.get(url, headers=emulator.headers).status_code == 200
