"""Authentication, rate limit and imports over real HTTP through the emulator subprocess (contract 1, 2, 5)."""

from __future__ import annotations

import csv
import io
import time

import pytest

from emulator.testing import RunningEmulator
from tests.fixtures.emulator import upload_csv

upload = upload_csv


def report_rows(emu: RunningEmulator, url: str) -> list[dict[str, str]]:
    response = emu.anon.get(url)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.text)))


def test_missing_and_unknown_keys_get_plain_401(emulator: RunningEmulator) -> None:
    for headers in ({}, {"Authorization": "apiKey nope:nope"}, {"Authorization": "Bearer " + emulator.api_key}):
        response = emulator.anon.get(emulator.url("/imports"), headers=headers)
        assert response.status_code == 401
        assert response.text == "Unauthorized"
        assert not response.headers["content-type"].startswith("application/json")


def test_key_without_scope_gets_403_json(emulator: RunningEmulator) -> None:
    key = emulator.admin.create_key(scopes=["import:read"])
    headers = {"Authorization": f"apiKey {key}"}
    assert emulator.anon.get(emulator.url("/imports"), headers=headers).status_code == 200
    response = upload(emulator, "_email\na@example.com\n", headers=headers)
    assert response.status_code == 403
    body = response.json()
    assert body["status"] == 403 and body["title"] == "Forbidden" and "import:write" in body["detail"]


def test_blocked_key_and_account_get_403(emulator: RunningEmulator) -> None:
    key = emulator.admin.create_key(blocked=True)
    response = emulator.anon.get(emulator.url("/imports"), headers={"Authorization": f"apiKey {key}"})
    assert response.status_code == 403 and response.json()["status"] == 403
    assert emulator.http.get("/imports").status_code == 200  # the key is now cached by the gate
    emulator.admin.update_account("default", blocked=True)
    assert emulator.anon.get(emulator.url("/imports"), headers=emulator.headers).status_code == 403
    emulator.admin.update_account("default", blocked=False)
    assert emulator.http.get("/imports").status_code == 200


def test_rate_limit_headers_and_429(emulator: RunningEmulator) -> None:
    emulator.admin.configure(rate_limit=5, rate_limit_window_s=30)
    responses = [emulator.anon.get(emulator.url("/imports"), headers=emulator.headers) for _ in range(7)]
    assert [r.status_code for r in responses] == [200] * 5 + [429] * 2
    first = responses[0].headers
    assert first["X-RateLimit-Limit"] == "5" and first["X-RateLimit-Remaining"] == "4"
    assert int(first["X-RateLimit-Reset"]) >= int(time.time())
    last = responses[-1]
    assert last.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(last.headers["Retry-After"]) <= 30
    assert last.json()["status"] == 429
    stats = emulator.admin.stats()
    assert stats["rateLimited"] == 2
    assert stats["maxRequestsInWindow"] == 7 and stats["maxAllowedInWindow"] == 5
    assert stats["requests"]["GET /imports"] == 7


def test_429_without_retry_after_when_configured(emulator: RunningEmulator) -> None:
    emulator.admin.configure(rate_limit=1, rate_limit_window_s=30, retry_after_header=False)
    emulator.anon.get(emulator.url("/imports"), headers=emulator.headers)
    response = emulator.anon.get(emulator.url("/imports"), headers=emulator.headers)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert "X-RateLimit-Reset" in response.headers


def test_rate_limit_window_resets(emulator: RunningEmulator) -> None:
    emulator.admin.configure(rate_limit=2, rate_limit_window_s=0.5)
    time.sleep(0.5 - time.time() % 0.5)  # start at a window boundary
    codes = [emulator.anon.get(emulator.url("/imports"), headers=emulator.headers).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    time.sleep(0.55)
    assert emulator.anon.get(emulator.url("/imports"), headers=emulator.headers).status_code == 200


def test_contacts_import_lifecycle_and_error_report(emulator: RunningEmulator) -> None:
    content = (
        "_email,_name,_points,_birthdate,_newsletterSubscriptionStatus,loyalty\n"
        "ann@example.com,Ann,5,1990-01-01,subscribed,gold\n"
        "not-an-email,Bob,05,1990-13-01,maybe,\n"
        "\n"
        "cy@example.com,Cy\n"
        ",NoMail,1,,,\n"
    )
    response = upload(emulator, content)
    assert response.status_code == 201
    created = response.json()
    assert created["status"] == "queued" and created["total"] == 4 and created["origin"] == "api"
    assert created["options"] == {"delimiter": ",", "overrideExisting": True, "updateOnlyEmptyFields": False}
    emulator.admin.wait_import(created["id"])
    job = emulator.anon.get(emulator.url(f"/imports/{created['id']}"), headers=emulator.headers).json()
    assert job["status"] == "finished"
    assert (job["success"], job["errors"]) == (1, 3)
    assert job["startedAt"] and job["finishedAt"]
    rows = report_rows(emulator, job["errorReportFileUrl"])
    assert [(r["line"], r["field"]) for r in rows] == [
        ("2", "_email"),
        ("2", "_points"),
        ("2", "_birthdate"),
        ("2", "_newsletterSubscriptionStatus"),
        ("3", ""),
        ("4", "_email"),
    ]
    contacts = emulator.admin.contacts()
    assert [(c["_email"], c["_name"], c["_points"], c["loyalty"]) for c in contacts] == [
        ("ann@example.com", "Ann", 5, "gold")
    ]
    assert len(contacts[0]["id"]) == 24


def test_error_report_link_is_presigned(emulator: RunningEmulator) -> None:
    created = upload(emulator, "_email\nbad\n").json()
    emulator.admin.wait_import(created["id"])
    url = emulator.anon.get(emulator.url(f"/imports/{created['id']}"), headers=emulator.headers).json()[
        "errorReportFileUrl"
    ]
    assert emulator.anon.get(url.replace("signature=", "signature=0")).status_code == 403
    assert emulator.anon.get(url.split("?")[0]).status_code == 403


def test_list_imports_pages_newest_first(emulator: RunningEmulator) -> None:
    ids = [upload(emulator, "_email\na@example.com\n").json()["id"] for _ in range(3)]
    first = emulator.anon.get(emulator.url("/imports?limit=2"), headers=emulator.headers).json()
    assert [r["id"] for r in first["results"]] == [ids[2], ids[1]]
    assert "prev" not in first["links"]
    second = emulator.anon.get(first["links"]["next"], headers=emulator.headers).json()
    assert [r["id"] for r in second["results"]] == [ids[0]]
    assert "next" not in second["links"] and "prev" in second["links"]
    assert emulator.anon.get(emulator.url("/imports/?limit=500"), headers=emulator.headers).status_code == 422


def test_delete_import_only_when_done(emulator: RunningEmulator) -> None:
    emulator.admin.configure(import_rows_per_s=1)
    slow = upload(emulator, "_email\n" + "".join(f"u{i}@example.com\n" for i in range(50))).json()
    response = emulator.anon.delete(emulator.url(f"/imports/{slow['id']}"), headers=emulator.headers)
    assert response.status_code == 409 and response.json()["status"] == 409
    emulator.admin.cancel_import(slow["id"])
    cancelled = emulator.http.get(f"/imports/{slow['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancelledAt"]
    assert emulator.anon.delete(emulator.url(f"/imports/{slow['id']}"), headers=emulator.headers).status_code == 204
    assert emulator.anon.get(emulator.url(f"/imports/{slow['id']}"), headers=emulator.headers).status_code == 404
    assert emulator.anon.delete(emulator.url(f"/imports/{slow['id']}"), headers=emulator.headers).status_code == 404


def test_eleventh_queued_import_gets_e0401(emulator: RunningEmulator) -> None:
    emulator.admin.configure(import_rows_per_s=0.5)
    body = "_email\n" + "".join(f"u{i}@example.com\n" for i in range(20))
    for _ in range(10):
        assert upload(emulator, body).status_code == 201
    response = upload(emulator, body)
    assert response.status_code == 400
    assert response.json()["code"] == "E0401"
    assert emulator.admin.stats()["maxQueuedImports"] == 10


def test_in_progress_may_not_count_toward_queue(emulator: RunningEmulator) -> None:
    emulator.admin.configure(import_rows_per_s=0.5, in_progress_counts_toward_queue=False)
    body = "_email\n" + "".join(f"u{i}@example.com\n" for i in range(20))
    first = upload(emulator, body).json()
    deadline = time.monotonic() + 10
    while (
        emulator.anon.get(emulator.url(f"/imports/{first['id']}"), headers=emulator.headers).json()["status"]
        != "inProgress"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for _ in range(10):
        assert upload(emulator, body).status_code == 201
    assert upload(emulator, body).status_code == 400


def test_imports_run_one_at_a_time_in_creation_order(emulator: RunningEmulator) -> None:
    emulator.admin.configure(import_rows_per_s=200)
    body = "_email\n" + "".join(f"u{i}@example.com\n" for i in range(40))
    ids = [upload(emulator, body).json()["id"] for _ in range(3)]
    seen_running: set[tuple[str, ...]] = set()
    deadline = time.monotonic() + 30
    while True:
        jobs = {j["id"]: j for j in emulator.admin.imports()}
        running = tuple(i for i in ids if jobs[i]["status"] == "inProgress")
        assert len(running) <= 1
        seen_running.add(running)
        if all(jobs[i]["status"] == "finished" for i in ids):
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    finished = [jobs[i]["finishedAt"] for i in ids]
    assert finished == sorted(finished)
    assert all(jobs[i]["startedAt"] >= jobs[ids[n - 1]]["finishedAt"] for n, i in enumerate(ids) if n)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"type": "orders"}, "type"),
        ({"delimiter": "|"}, "delimiter"),
        ({"overrideExisting": "yes"}, "overrideExisting"),
        ({"overrideExisting": "false", "updateOnlyEmptyFields": "true"}, "updateOnlyEmptyFields"),
        ({"type": "coupons"}, "couponSetId"),
    ],
)
def test_invalid_fields_get_422(emulator: RunningEmulator, fields: dict[str, str], path: str) -> None:
    response = upload(emulator, "_email\na@example.com\n", **fields)
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == 422 and path in [e["path"] for e in body["validationErrors"]]
    assert emulator.admin.imports() == []


def test_unknown_form_fields_are_ignored_unless_strict(emulator: RunningEmulator) -> None:
    lenient = upload(emulator, "_email\na@example.com\n", source="erp")
    assert lenient.status_code == 201, lenient.text
    assert "source" not in lenient.json()["options"]
    emulator.admin.configure(strict_unknown_fields=True)
    strict = upload(emulator, "_email\nb@example.com\n", source="erp")
    assert strict.status_code == 422
    assert [(e["path"], e["reason"]) for e in strict.json()["validationErrors"]] == [
        ("source", "Extra inputs are not permitted")
    ]
    assert upload(emulator, "_email\nb@example.com\n").status_code == 201
    assert len(emulator.admin.imports()) == 2


def test_counts_grow_while_in_progress(emulator: RunningEmulator) -> None:
    emulator.admin.configure(import_rows_per_s=100)
    rows = "".join(f"u{i}@example.com\n" if i % 5 else "broken\n" for i in range(120))
    created = upload(emulator, "_email\n" + rows).json()
    seen: list[tuple[str, int]] = []
    while True:
        job = emulator.http.get(f"/imports/{created['id']}").json()
        seen.append((job["status"], job["success"] + job["errors"]))
        if job["status"] == "finished":
            break
        time.sleep(0.1)
    progress = [done for status, done in seen if status == "inProgress"]
    assert len(set(progress)) >= 3 and progress == sorted(progress)
    assert progress[0] < 120 and all(done <= 120 for done in progress)
    assert (job["success"], job["errors"], job["total"]) == (96, 24, 120)


def test_imports_of_another_account_are_404(emulator: RunningEmulator) -> None:
    created = upload(emulator, "_email\na@example.com\n").json()
    other = emulator.admin.create_account(name="Other")
    key = emulator.admin.create_key(account_id=other["id"])
    headers = {"Authorization": f"apiKey {key}"}
    assert emulator.anon.get(emulator.url(f"/imports/{created['id']}"), headers=headers).status_code == 404
    assert emulator.anon.get(emulator.url("/imports"), headers=headers).json()["results"] == []
    # each account has its own rate-limit window
    emulator.admin.configure(rate_limit=1)
    emulator.admin.reset_stats()
    assert emulator.http.get("/imports").status_code == 200
    assert emulator.anon.get(emulator.url("/imports"), headers=headers).status_code == 200
    assert emulator.http.get("/imports").status_code == 429


def test_defaults_match_the_contract(emulator: RunningEmulator) -> None:
    response = emulator.http.post(
        "/imports/",
        data={"type": "contacts", "delimiter": ";", "overrideExisting": "false", "updateOnlyEmptyFields": "false"},
        files={"file": ("c.csv", "_email;_name\na@example.com;A\n", "text/csv")},
    )
    assert response.status_code == 201
    created = response.json()
    assert len(created["id"]) == 24 and int(created["id"], 16) >= 0
    assert created["createdAt"].endswith("Z")
    assert response.headers["X-RateLimit-Limit"] == "100" and response.headers["X-RateLimit-Remaining"] == "99"
    settings = emulator.admin.settings()
    assert (settings["max_queued_imports"], settings["max_queued_exports"]) == (10, 5)
    assert settings["max_upload_bytes"] == 50_000_000 and settings["presigned_url_ttl_s"] == 6000
    assert settings["authorized_domains"] == ["example.com"]
