"""Row validation and upsert semantics of imports, and every bad upload the contract lists (contract 5)."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from emulator.testing import RunningEmulator
from tests.fixtures.emulator import upload_csv

PRODUCTS_FORM = {"type": "products"}


def finished(emu: RunningEmulator, response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 201, response.text
    emu.admin.wait_import(response.json()["id"])
    job = emu.anon.get(emu.url(f"/imports/{response.json()['id']}"), headers=emu.headers).json()
    assert job["status"] == "finished"
    return dict(job)


def report(emu: RunningEmulator, job: dict[str, object]) -> list[tuple[str, str]]:
    text = emu.anon.get(str(job["errorReportFileUrl"])).text
    return [(r["line"], r["field"]) for r in csv.DictReader(io.StringIO(text))]


def test_override_existing_false_keeps_existing_contacts(emulator: RunningEmulator) -> None:
    finished(emulator, upload_csv(emulator, "_email,_name\nann@example.com,Ann\n"))
    job = finished(
        emulator,
        upload_csv(emulator, "_email,_name\nANN@example.com,Changed\nbob@example.com,Bob\n", overrideExisting="false"),
    )
    assert (job["success"], job["errors"]) == (2, 0)
    names = {c["_email"].lower(): c["_name"] for c in emulator.admin.contacts()}
    assert names == {"ann@example.com": "Ann", "bob@example.com": "Bob"}


def test_update_only_empty_fields(emulator: RunningEmulator) -> None:
    finished(emulator, upload_csv(emulator, "_email,_name,_surname\nann@example.com,Ann,\n"))
    finished(
        emulator,
        upload_csv(emulator, "_email,_name,_surname\nann@example.com,Other,Smith\n", updateOnlyEmptyFields="true"),
    )
    (contact,) = emulator.admin.contacts()
    assert (contact["_name"], contact["_surname"]) == ("Ann", "Smith")


def test_override_replaces_given_fields_and_keeps_others(emulator: RunningEmulator) -> None:
    finished(emulator, upload_csv(emulator, "_email,_name,_points\nann@example.com,Ann,3\n"))
    finished(emulator, upload_csv(emulator, "_email,_name,_points\nann@example.com,Anna,\n"))
    (contact,) = emulator.admin.contacts()
    assert (contact["_name"], contact["_points"]) == ("Anna", 3)


def test_contact_typed_fields(emulator: RunningEmulator) -> None:
    content = (
        "_email;_birthdate;_points;_mobilePhone;_smsSubscriptionStatus;_unknownSystem;hobbies\n"
        "a@example.com;1990-02-28;0;+34600111222;none;x;ski|golf\n"
        "b@example.com;1990-02-30;12;+34 600;none;x;\n"
        "c@example.com;;-3;;SUBSCRIBED;x;\n"
        "d@example.com;;1.5;;;x;\n"
    )
    job = finished(emulator, upload_csv(emulator, content, delimiter=";"))
    assert (job["success"], job["errors"]) == (1, 3)
    assert report(emulator, job) == [
        ("2", "_birthdate"),
        ("2", "_mobilePhone"),
        ("3", "_smsSubscriptionStatus"),
        ("4", "_points"),
    ]
    (contact,) = emulator.admin.contacts()
    assert contact["_points"] == 0 and contact["hobbies"] == "ski|golf" and "_unknownSystem" not in contact


def test_bom_and_quoted_newlines(emulator: RunningEmulator) -> None:
    content = '\ufeff_email,_name\nann@example.com,"Ann\nMarie, Jr"\n'.encode()
    job = finished(emulator, upload_csv(emulator, content))
    assert job["total"] == 1 and job["success"] == 1
    assert emulator.admin.contacts()[0]["_name"] == "Ann\nMarie, Jr"


def test_products_import_validation(emulator: RunningEmulator) -> None:
    content = (
        "productId,name,productDetailUrl,unitPrice,categories,tags,availability,inStockUnits,extra\n"
        "P1,Shoe,https://shop.example.com/p1,19.90,Shoes/Running|Sale,a|b,instock,4,ignored\n"
        "P2,Hat,https://evil.test/p2,5,,,,,\n"
        "P3,Bag,https://example.com/p3,12;50,,,,,\n"
        "P4,,https://example.com/p4,1,,,unknown,05,\n"
        ",Nameless,https://example.com/p5,1,,,,,\n"
        "P6,Cap,https://notexample.com/p6,1,Shoes//Running,,,,\n"
    )
    job = finished(emulator, upload_csv(emulator, content, **PRODUCTS_FORM))
    assert (job["success"], job["errors"]) == (1, 5)
    assert report(emulator, job) == [
        ("2", "productDetailUrl"),
        ("3", "unitPrice"),
        ("4", "availability"),
        ("4", "inStockUnits"),
        ("4", "name"),
        ("5", "productId"),
        ("6", "categories"),
        ("6", "productDetailUrl"),
    ]
    (product,) = emulator.admin.products()
    assert product["categories"] == ["Shoes/Running", "Sale"] and product["unitPrice"] == 19.9
    assert product["inStockUnits"] == 4 and "extra" not in product


def test_authorized_domains_setting(emulator: RunningEmulator) -> None:
    emulator.admin.configure(authorized_domains=["shop.test"])
    content = (
        "productId,name,productDetailUrl,unitPrice\nP1,A,https://www.shop.test/1,1\nP2,B,https://example.com/2,1\n"
    )
    job = finished(emulator, upload_csv(emulator, content, **PRODUCTS_FORM))
    assert (job["success"], job["errors"]) == (1, 1)


def test_products_import_needs_required_columns(emulator: RunningEmulator) -> None:
    response = upload_csv(emulator, "productId,name\nP1,A\n", **PRODUCTS_FORM)
    assert response.status_code == 422
    assert "productDetailUrl" in response.json()["detail"] and "unitPrice" in response.json()["detail"]


def test_coupon_import_adds_codes_and_rejects_duplicates(emulator: RunningEmulator) -> None:
    coupon_set = emulator.admin.create_coupon_set(name="Welcome", codes=["OLD1"])
    content = "code\nNEW1\nOLD1\nNEW2\nNEW1\n\n"
    job = finished(emulator, upload_csv(emulator, content, type="coupons", couponSetId=coupon_set["id"]))
    assert (job["total"], job["success"], job["errors"]) == (4, 2, 2)
    assert job["options"]["couponSetId"] == coupon_set["id"]
    assert report(emulator, job) == [("2", "code"), ("4", "code")]
    assert [c["code"] for c in emulator.admin.coupon_codes(coupon_set["id"])] == ["OLD1", "NEW1", "NEW2"]
    fresh = emulator.anon.get(emulator.url(f"/coupon-sets/{coupon_set['id']}"), headers=emulator.headers).json()
    assert (fresh["quantity"], fresh["available"], fresh["assigned"]) == (3, 3, 0)


def test_coupon_import_needs_code_header_and_a_multiple_set(emulator: RunningEmulator) -> None:
    multiple = emulator.admin.create_coupon_set()
    response = upload_csv(emulator, "coupon\nA\n", type="coupons", couponSetId=multiple["id"])
    assert response.status_code == 422 and "code" in response.json()["detail"]
    single = emulator.admin.create_coupon_set(type="single", code="SUMMER")
    response = upload_csv(emulator, "code\nA\n", type="coupons", couponSetId=single["id"])
    assert response.status_code == 422
    response = upload_csv(emulator, "code\nA\n", type="coupons", couponSetId="ffffffffffffffffffffffff")
    assert response.status_code == 422


def test_contacts_import_needs_email_column(emulator: RunningEmulator) -> None:
    response = upload_csv(emulator, "_name\nAnn\n")
    assert response.status_code == 422 and "_email" in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        ("_email,_name\nj\xf6rg@example.com,J\xf6rg\n".encode("latin-1"), "UTF-8"),
        (b"_email,_email\na@example.com,b@example.com\n", "repeats"),
        (b"_email,,x\na@example.com,,1\n", "empty column"),
    ],
)
def test_unusable_files_get_422(emulator: RunningEmulator, content: bytes, words: str) -> None:
    response = upload_csv(emulator, content)
    assert response.status_code == 422
    body = response.json()
    assert words in body["detail"] and body["validationErrors"][0]["path"] == "file"
    assert emulator.admin.imports() == []


def test_huge_field_fails_its_row_only(emulator: RunningEmulator) -> None:
    emulator.admin.configure(max_field_chars=1000)
    content = f"_email,_name\nann@example.com,{'x' * 5000}\nbob@example.com,Bob\n"
    job = finished(emulator, upload_csv(emulator, content))
    assert (job["success"], job["errors"]) == (1, 1)
    assert report(emulator, job) == [("1", "_name")]


def test_wrong_part_content_type_is_422(emulator: RunningEmulator) -> None:
    response = upload_csv(emulator, "_email\na@example.com\n", file_type="application/json")
    assert response.status_code == 422 and response.json()["validationErrors"][0]["path"] == "file"


def test_missing_file_and_fields_are_422(emulator: RunningEmulator) -> None:
    response = emulator.anon.post(
        emulator.url("/imports"), headers=emulator.headers, data={"type": "contacts"}, files={"other": ("x", b"1")}
    )
    assert response.status_code == 422
    paths = {e["path"] for e in response.json()["validationErrors"]}
    assert {"delimiter", "overrideExisting", "updateOnlyEmptyFields", "file"} <= paths


def test_not_multipart_is_415(emulator: RunningEmulator) -> None:
    response = emulator.anon.post(emulator.url("/imports"), headers=emulator.headers, json={"type": "contacts"})
    assert response.status_code == 415 and response.json()["status"] == 415


@pytest.mark.parametrize(
    "body",
    [
        b'--XYZ\r\nContent-Disposition: form-data; name="type"\r\n\r\ncontacts\r\n',  # no closing boundary
        b"garbage without any boundary",
        b"--XYZ\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--XYZ--\r\n",
    ],
)
def test_malformed_multipart_is_400(emulator: RunningEmulator, body: bytes) -> None:
    headers = {**emulator.headers, "Content-Type": "multipart/form-data; boundary=XYZ"}
    response = emulator.anon.post(emulator.url("/imports"), headers=headers, content=body)
    assert response.status_code == 400
    assert "multipart" in response.json()["detail"]
    assert emulator.admin.imports() == []


def test_multipart_without_boundary_is_400(emulator: RunningEmulator) -> None:
    headers = {**emulator.headers, "Content-Type": "multipart/form-data"}
    assert emulator.anon.post(emulator.url("/imports"), headers=headers, content=b"x").status_code == 400


def test_file_over_the_limit_is_413_and_leaves_nothing(emulator: RunningEmulator) -> None:
    emulator.admin.configure(max_upload_bytes=100_000)
    big = "_email\n" + "".join(f"user{i}@example.com\n" for i in range(10_000))
    response = upload_csv(emulator, big)
    assert response.status_code == 413
    assert "100,000" in response.json()["detail"]
    assert emulator.admin.imports() == []
    small = "_email\n" + "".join(f"user{i}@example.com\n" for i in range(100))
    assert upload_csv(emulator, small).status_code == 201


def test_very_large_declared_body_is_refused_early(emulator: RunningEmulator) -> None:
    emulator.admin.configure(max_upload_bytes=1000)
    chunks = (b"x" * 65536 for _ in range(200))  # 13 MB, far beyond 4x the limit
    headers = {
        **emulator.headers,
        "Content-Type": "multipart/form-data; boundary=XYZ",
        "Content-Length": str(200 * 65536),
    }
    response = emulator.anon.post(emulator.url("/imports"), headers=headers, content=chunks)
    assert response.status_code == 413


def test_key_repeated_in_one_file_sees_its_earlier_rows(emulator: RunningEmulator) -> None:
    content = "_email,_name,_surname\nann@example.com,Ann,\nbob@example.com,Bob,B\nANN@example.com,,Smith\n"
    job = finished(emulator, upload_csv(emulator, content, updateOnlyEmptyFields="true"))
    assert (job["success"], job["errors"]) == (3, 0)
    contacts = {c["_email"].lower(): c for c in emulator.admin.contacts()}
    assert set(contacts) == {"ann@example.com", "bob@example.com"}
    assert (contacts["ann@example.com"]["_name"], contacts["ann@example.com"]["_surname"]) == ("Ann", "Smith")


def test_blank_lines_are_not_data_rows(emulator: RunningEmulator) -> None:
    content = "_email,_points\n\nann@example.com,1\n   \nbad,2\n\nbob@example.com,x\n"
    job = finished(emulator, upload_csv(emulator, content))
    assert (job["success"], job["errors"]) == (1, 2)
    assert report(emulator, job) == [("2", "_email"), ("3", "_points")]


def test_new_and_updated_elements_in_one_batch(emulator: RunningEmulator) -> None:
    finished(emulator, upload_csv(emulator, "_email,_name,_points\nann@example.com,Ann,3\n"))
    (before,) = emulator.admin.contacts()
    finished(emulator, upload_csv(emulator, "_email,_name,_points\nbob@example.com,Bob,\nann@example.com,Anna,\n"))
    contacts = {c["_email"]: c for c in emulator.admin.contacts()}
    ann, bob = contacts["ann@example.com"], contacts["bob@example.com"]
    assert (ann["id"], ann["_createdAt"]) == (before["id"], before["_createdAt"])
    assert (ann["_name"], ann["_points"]) == ("Anna", 3)
    assert ann["_updatedAt"] >= before["_updatedAt"]
    assert "_points" not in bob and bob["id"] != ann["id"] and bob["_createdAt"] == bob["_updatedAt"]
