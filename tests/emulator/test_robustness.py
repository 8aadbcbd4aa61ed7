"""Bad requests never crash the emulator or corrupt its data; persistence with ``--state``; the CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.testing import RunningEmulator, start_emulator
from tests.fixtures.emulator import upload_csv


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/imports", 405),
        ("PATCH", "/imports/abc", 405),
        ("POST", "/contacts/a@example.com", 405),
        ("GET", "/imports/ffffffffffffffffffffffff", 404),
        ("GET", "/exports/ffffffffffffffffffffffff", 404),
        ("DELETE", "/exports/nope", 404),
        ("GET", "/purchases/purchase-id/nope", 404),
        ("GET", "/no/such/endpoint", 404),
    ],
)
def test_wrong_methods_and_unknown_ids(emulator: RunningEmulator, method: str, path: str, status: int) -> None:
    response = emulator.http.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]


def test_collections_answer_with_and_without_trailing_slash(emulator: RunningEmulator) -> None:
    for path in ("/imports", "/imports/", "/exports", "/exports/", "/coupon-sets", "/coupon-sets/"):
        response = emulator.http.get(path)
        assert response.status_code == 200, path
        assert response.json() == {"links": {}, "results": []}


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "skip=-1"])
def test_bad_paging_is_422(emulator: RunningEmulator, query: str) -> None:
    response = emulator.http.get(f"/imports?{query}")
    assert response.status_code == 422 and response.json()["validationErrors"]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b"[]", "application/json", 422),
        (b"null", "application/json", 422),
        (b"{}", "text/plain", 415),
        (b"{}", "", 415),
    ],
)
def test_bad_json_bodies(emulator: RunningEmulator, content: bytes, content_type: str, status: int) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/exports", "/purchases", "/contacts/a@example.com", "/products/product-id/P1"):
        method = "PATCH" if "contacts" in path or "products" in path else "POST"
        response = emulator.http.request(method, path, content=content, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert response.json()["status"] == status


def test_huge_json_string_is_rejected(emulator: RunningEmulator) -> None:
    response = emulator.http.patch("/contacts/a@example.com", json={"_name": "x" * 100_000})
    assert response.status_code == 422
    assert emulator.admin.contacts() == []


def test_data_survives_bad_requests(emulator: RunningEmulator) -> None:
    emulator.admin.seed_contacts([{"_email": "ann@example.com", "_name": "Ann"}])
    upload_csv(emulator, b"\xff\xfe\x00garbage")
    upload_csv(emulator, "_email;x\nann@example.com;1\n", delimiter="|")
    emulator.http.patch("/contacts/ann@example.com", json={"_points": "many"})
    emulator.http.post("/imports", content=b"--B\r\n", headers={"Content-Type": "multipart/form-data; boundary=B"})
    (contact,) = emulator.admin.contacts()
    assert contact["_name"] == "Ann" and "_points" not in contact
    assert emulator.http.get("/contacts/ann@example.com").status_code == 200


def test_admin_reports_bad_input(emulator: RunningEmulator) -> None:
    assert emulator.anon.post(emulator.url("/_emulator/keys"), json={"scopes": ["nope"]}).status_code == 422
    assert emulator.anon.post(emulator.url("/_emulator/keys"), json={"accountId": "ghost"}).status_code == 404
    assert emulator.anon.get(emulator.url("/_emulator/contacts?account=ghost")).status_code == 404
    assert emulator.anon.post(emulator.url("/_emulator/coupon-sets"), json={"type": "single"}).status_code == 422
    assert emulator.anon.post(emulator.url("/_emulator/workflows"), json={"status": "paused"}).status_code == 422
    assert emulator.anon.post(emulator.url("/_emulator/contacts"), json=[{"_email": "bad"}]).status_code == 422


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "emulator.sqlite"
    with start_emulator(state_file=state, import_rows_per_s=0) as first:
        first.http.patch("/contacts/ann@example.com", json={"_name": "Ann"})
        job = upload_csv(first, "_email\nbob@example.com\nbad\n").json()
        first.admin.wait_import(job["id"])
        coupon_set = first.admin.create_coupon_set(codes=["A"])
        key = first.api_key
    with start_emulator(state_file=state, api_key="other:key") as second:
        assert sorted(c["_email"] for c in second.admin.contacts()) == ["ann@example.com", "bob@example.com"]
        restored = second.http.get(f"/imports/{job['id']}").json()
        assert (restored["status"], restored["errors"]) == ("finished", 1)
        report = second.anon.get(restored["errorReportFileUrl"])
        assert report.status_code == 200 and "_email" in report.text
        assert second.http.get(f"/coupon-sets/{coupon_set['id']}").status_code == 200
        old = second.anon.get(second.url("/imports"), headers={"Authorization": f"apiKey {key}"})
        assert old.status_code == 200  # keys are state too


def test_queued_imports_resume_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "emulator.sqlite"
    with start_emulator(state_file=state, import_rows_per_s=0.1) as first:
        job = upload_csv(first, "_email\nann@example.com\nbob@example.com\n").json()
        time.sleep(0.3)
    with start_emulator(state_file=state, import_rows_per_s=0) as second:
        done = second.admin.wait_import(job["id"], timeout=30)
        assert (done["status"], done["success"]) == ("finished", 2)


def test_cli_generates_and_prints_a_key() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        second = process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=10)
    key = first.rsplit(" ", 1)[-1].strip()
    key_id, _, secret = key.partition(":")
    assert "API key" in first and len(key_id) == 24 and secret
    assert "listening on http://127.0.0.1:" in second


def test_cli_help_lists_every_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "emulator", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--host", "--port", "--api-key", "--state", "--speed", "--authorized-domain", "--rate-limit"):
        assert flag in result.stdout


def test_client_vanishing_mid_upload_leaves_nothing(emulator: RunningEmulator) -> None:
    host, port = emulator.base_url.removeprefix("http://").split(":")
    head = (
        "POST /imports HTTP/1.1\r\nHost: emulator\r\n"
        f"Authorization: apiKey {emulator.api_key}\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 10000000\r\n\r\n"
        '--B\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\n_email\n'
    ).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(head + b"a@example.com\n" * 5000)
    time.sleep(0.3)
    assert emulator.admin.imports() == []
    assert emulator.http.get("/imports").status_code == 200


def test_cli_reports_a_busy_port_and_a_bad_state_file(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [sys.executable, "-m", "emulator", "--port", str(port), "--api-key", "a:b"], capture_output=True, text=True
        )
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    state = tmp_path / "not-a-database.sqlite"
    state.write_text("hello")
    bad = subprocess.run(
        [sys.executable, "-m", "emulator", "--port", "0", "--api-key", "a:b", "--state", str(state)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "cannot start" in bad.stderr
