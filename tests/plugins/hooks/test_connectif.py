"""ConnectifHook against a scripted HTTP transport (no network): requests, errors, retries, idempotency."""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from connectif_provider.exceptions import (
    ConnectifAuthenticationError,
    ConnectifError,
    ConnectifImportQueueFullError,
    ConnectifMissingContactError,
    ConnectifMissingProductError,
    ConnectifPayloadTooLargeError,
    ConnectifPermissionError,
    ConnectifServerError,
    ConnectifValidationError,
)
from connectif_provider.hooks.base import settings_from_connection
from tests.fixtures.provider import TEST_API_KEY

BASE = "https://api.connectif.test"


def _import(import_id: str = "6072374b4d3ceb76e44d4323", **fields: Any) -> dict[str, Any]:
    resource = {
        "id": import_id,
        "type": "contacts",
        "status": "queued",
        "origin": "api",
        "options": {"delimiter": ",", "overrideExisting": False, "updateOnlyEmptyFields": False},
        "total": 2,
        "success": 0,
        "errors": 0,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }
    resource.update(fields)
    return resource


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "contacts-0001.csv"
    path.write_text('_email,_name\na@example.com,"Ann, A."\nb@example.com,"multi\nline"\n', encoding="utf-8")
    return path


def test_settings_default_host_scheme_and_key_hidden() -> None:
    conn = SimpleNamespace(conn_id="c", host="", port=None, password=TEST_API_KEY)
    settings = settings_from_connection(conn, {})
    assert settings.base_url == "https://api.connectif.cloud"
    assert settings.rate_limit_per_minute == 90
    assert TEST_API_KEY not in repr(settings)
    conn = SimpleNamespace(conn_id="c", host="127.0.0.1", port=8765, password="k")
    assert settings_from_connection(conn, {"scheme": "http"}).base_url == "http://127.0.0.1:8765"
    conn = SimpleNamespace(conn_id="c", host="http://127.0.0.1:9/", port=None, password="k")
    assert settings_from_connection(conn, {"rate_limit_per_minute": "50"}).rate_limit_per_minute == 50
    with pytest.raises(ValueError, match="no API key"):
        settings_from_connection(SimpleNamespace(conn_id="c", host="", port=None, password=None), {})


def test_bucket_default_is_per_account_not_per_connection() -> None:
    a = settings_from_connection(SimpleNamespace(conn_id="a", host="", port=None, password="k1"), {})
    b = settings_from_connection(SimpleNamespace(conn_id="b", host="", port=None, password="k1"), {})
    c = settings_from_connection(SimpleNamespace(conn_id="c", host="", port=None, password="k2"), {})
    assert a.rate_limit_bucket == b.rate_limit_bucket != c.rate_limit_bucket
    assert "k1" not in a.rate_limit_bucket


def test_get_import_sends_api_key_header(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add("GET", "/imports/abc", httpx.Response(200, json=_import("abc")))
    assert hook.get_import("abc")["id"] == "abc"
    assert api.requests[0].headers["authorization"] == f"apiKey {TEST_API_KEY}"


@pytest.mark.parametrize(
    ("response", "error", "fragment"),
    [
        (httpx.Response(401, text="Unauthorized"), ConnectifAuthenticationError, "401: Unauthorized"),
        (
            httpx.Response(403, json={"status": 403, "title": "Forbidden", "detail": "missing scope import:read"}),
            ConnectifPermissionError,
            "missing scope import:read",
        ),
        (
            httpx.Response(
                422,
                json={
                    "status": 422,
                    "title": "Unprocessable",
                    "detail": "invalid",
                    "validationErrors": [{"path": "delimiter", "reason": "must be , or ;"}],
                },
            ),
            ConnectifValidationError,
            "delimiter: must be , or ;",
        ),
    ],
)
def test_error_answers_become_typed_exceptions(
    scripted_hook: Any, response: httpx.Response, error: type[Exception], fragment: str
) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add("GET", "/imports/x", response)
    with pytest.raises(error) as info:
        hook.get_import("x")
    assert fragment in str(info.value)
    assert info.value.status == response.status_code  # type: ignore[attr-defined]
    assert TEST_API_KEY not in str(info.value)
    assert len(api.requests) == 1  # client errors are not retried


def test_custom_codes(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add(
        "POST",
        "/purchases",
        httpx.Response(400, json={"status": 400, "title": "Bad Request", "detail": "no contact", "code": "E0101"}),
        httpx.Response(
            400,
            json={"status": 400, "title": "Bad Request", "detail": "unknown", "code": "E0102", "productIds": ["p9"]},
        ),
    )
    with pytest.raises(ConnectifMissingContactError):
        hook.create_purchase({"purchaseId": "o1"})
    with pytest.raises(ConnectifMissingProductError) as info:
        hook.create_purchase({"purchaseId": "o1"})
    assert info.value.code == "E0102"
    assert info.value.product_ids == ["p9"]


@pytest.mark.parametrize(
    "duplicate",
    [
        httpx.Response(409, json={"status": 409, "title": "Conflict", "detail": "purchase exists"}),
        httpx.Response(400, json={"status": 400, "title": "Bad Request", "detail": "Purchase already exists"}),
    ],
)
def test_duplicate_purchase_is_success(scripted_hook: Any, duplicate: httpx.Response) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add("POST", "/purchases", duplicate)
    assert hook.create_purchase({"purchaseId": "o1"}, trigger_purchase_event=False) == {
        "purchaseId": "o1",
        "duplicate": True,
    }
    assert "triggerPurchaseEvent=false" in api.requests[0].url


def test_5xx_and_dropped_connections_are_retried(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add(
        "GET",
        "/imports/abc",
        httpx.Response(503, json={"status": 503, "title": "Service Unavailable", "detail": "try later"}),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        httpx.Response(200, json=_import("abc")),
    )
    assert hook.get_import("abc")["id"] == "abc"
    assert len(api.requests) == 4


def test_gives_up_after_max_attempts(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE, max_attempts=2)
    api.add("GET", "/imports/abc", httpx.Response(500, text="boom"))
    with pytest.raises(ConnectifServerError):
        hook.get_import("abc")
    assert len(api.requests) == 2


def test_429_honours_retry_after_and_blocks_the_shared_bucket(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add(
        "GET",
        "/imports/abc",
        httpx.Response(429, headers={"Retry-After": "1"}, json={"status": 429, "title": "Too Many Requests"}),
        httpx.Response(200, json=_import("abc")),
    )
    started = time.monotonic()
    hook.get_import("abc")
    assert time.monotonic() - started >= 0.95
    assert len(api.requests) == 2


def test_429_without_retry_after_waits_for_reset(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    reset = int(time.time()) + 2
    api.add(
        "GET",
        "/imports/abc",
        httpx.Response(429, headers={"X-RateLimit-Reset": str(reset), "X-RateLimit-Remaining": "0"}),
        httpx.Response(200, json=_import("abc")),
    )
    hook.get_import("abc")
    second = api.requests[1]
    assert second is not None
    assert time.time() >= reset - 0.05


def test_429_with_no_hint_backs_off(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add("GET", "/imports/abc", httpx.Response(429, text="slow down"), httpx.Response(200, json=_import("abc")))
    assert hook.get_import("abc")["id"] == "abc"
    assert len(api.requests) == 2


def test_server_remaining_lowers_the_bucket(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE, rate_limit_per_minute=50)
    reset = int(time.time()) + 30
    api.add(
        "GET",
        "/imports/abc",
        httpx.Response(
            200, headers={"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(reset)}, json=_import("abc")
        ),
    )
    hook.get_import("abc")
    limiter = hook.get_settings().limiter()
    # one real token + phantom tokens so that only the server's 5 remain
    assert limiter.in_window() == 50 - 5


def test_list_follows_links_next_verbatim(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    next_url = f"{BASE}/imports/?cursor=opaque-token&limit=1"
    api.add(
        "GET",
        "/imports",
        lambda r: httpx.Response(200, json={"links": {"next": next_url}, "results": [_import("a")]}),
    )
    api.add("GET", "/imports/", httpx.Response(200, json={"links": {"prev": BASE}, "results": [_import("b")]}))
    assert [i["id"] for i in hook.list_imports()] == ["a", "b"]
    assert api.requests[1].url == next_url


def test_create_import_sends_multipart(scripted_hook: Any, csv_file: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add("POST", "/imports", httpx.Response(201, json=_import("new1")))
    created = hook.create_import(csv_file, "contacts", override_existing=True, update_only_empty_fields=True)
    assert created["id"] == "new1"
    body = api.requests[0].body
    assert api.requests[0].headers["content-type"].startswith("multipart/form-data")
    for part in (b'name="type"\r\n\r\ncontacts', b'name="overrideExisting"\r\n\r\ntrue', b"Content-Type: text/csv"):
        assert part in body


def test_create_import_validates_before_uploading(scripted_hook: Any, csv_file: Path, tmp_path: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    with pytest.raises(ValueError, match="override_existing"):
        hook.create_import(csv_file, "contacts", update_only_empty_fields=True)
    with pytest.raises(ValueError, match="coupon_set_id"):
        hook.create_import(csv_file, "coupons")
    big = tmp_path / "big.csv"
    with big.open("wb") as fh:
        fh.truncate(50_000_001)
    with pytest.raises(ConnectifPayloadTooLargeError, match="split it"):
        hook.create_import(big, "contacts")
    assert api.requests == []


def test_create_import_reconciles_unknown_outcome_instead_of_uploading_twice(
    scripted_hook: Any, csv_file: Path
) -> None:
    hook, api = scripted_hook(base_url=BASE)
    created = _import("a00000000000000000000001")

    def upload_then_drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    api.add("POST", "/imports", upload_then_drop)
    older = _import("a00000000000000000000000", total=2, createdAt="2020-01-01T00:00:00Z")
    api.add("GET", "/imports", httpx.Response(200, json={"links": {}, "results": [created, older]}))
    assert hook.create_import(csv_file, "contacts")["id"] == created["id"]
    assert len(api.calls("POST", "/imports")) == 1


def test_create_import_uploads_again_when_reconciliation_finds_nothing(scripted_hook: Any, csv_file: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    other = _import("b00000000000000000000009", total=999)  # not ours: different row count
    api.add(
        "POST",
        "/imports",
        httpx.Response(502, text="bad gateway"),
        httpx.Response(201, json=_import("b00000000000000000000001")),
    )
    api.add("GET", "/imports", httpx.Response(200, json={"links": {}, "results": [other]}))
    assert hook.create_import(csv_file, "contacts")["id"] == "b00000000000000000000001"
    assert len(api.calls("POST", "/imports")) == 2
    assert len(api.calls("GET", "/imports")) == 1


def test_queue_full_is_typed_and_not_retried(scripted_hook: Any, csv_file: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add(
        "POST",
        "/imports",
        httpx.Response(400, json={"status": 400, "title": "Bad Request", "code": "E0401", "detail": "10 queued"}),
    )
    with pytest.raises(ConnectifImportQueueFullError):
        hook.create_import(csv_file, "contacts")
    assert len(api.requests) == 1


def test_download_export_without_api_key_and_unpacks_csvs(scripted_hook: Any, tmp_path: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("export-activities-1.csv", "\ufeffa,b\n1,2\n")
        zf.writestr("export-activities-1-products.csv", "p\nx\n")
        zf.writestr("../evil/readme.txt", "ignored")
    file_url = "https://files.connectif.test/exports/e1.zip?signature=xyz"
    api.add("GET", "/exports/e1", httpx.Response(200, json={"id": "e1", "status": "finished", "fileUrl": file_url}))
    api.add("GET", "/exports/e1.zip", httpx.Response(200, content=buf.getvalue()))
    paths = hook.download_export("e1", tmp_path / "out")
    assert [p.name for p in paths] == ["export-activities-1-products.csv", "export-activities-1.csv"]
    assert all(p.parent == tmp_path / "out" for p in paths)
    download = api.calls("GET", "/exports/e1.zip")[0]
    assert "authorization" not in download.headers


def _export_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("export-contacts-1.csv", "a,b\n1,2\n")
    return buf.getvalue()


def test_download_export_fetches_a_fresh_url_when_the_link_expired(scripted_hook: Any, tmp_path: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    stale = "https://files.connectif.test/exports/stale.zip?signature=old"
    fresh = "https://files.connectif.test/exports/fresh.zip?signature=new"
    api.add(
        "GET",
        "/exports/e1",
        httpx.Response(200, json={"id": "e1", "status": "finished", "fileUrl": stale}),
        httpx.Response(200, json={"id": "e1", "status": "finished", "fileUrl": fresh}),
    )
    expired = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    api.add("GET", "/exports/stale.zip", httpx.Response(403, text=expired))
    api.add("GET", "/exports/fresh.zip", httpx.Response(200, content=_export_zip()))
    paths = hook.download_export("e1", tmp_path / "out")
    assert [p.name for p in paths] == ["export-contacts-1.csv"]
    assert len(api.calls("GET", "/exports/e1")) == 2
    assert len(api.calls("GET", "/exports/stale.zip")) == 1


def test_download_export_gives_up_after_refetching_twice(scripted_hook: Any, tmp_path: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    url = "https://files.connectif.test/exports/e1.zip?signature=old"
    api.add("GET", "/exports/e1", httpx.Response(200, json={"id": "e1", "status": "finished", "fileUrl": url}))
    api.add("GET", "/exports/e1.zip", httpx.Response(403, text="Request has expired"))
    with pytest.raises(ConnectifPermissionError, match="403"):
        hook.download_export("e1", tmp_path / "out")
    assert len(api.calls("GET", "/exports/e1")) == 3
    assert len(api.calls("GET", "/exports/e1.zip")) == 3


def test_download_export_other_errors_are_not_refetched(scripted_hook: Any, tmp_path: Path) -> None:
    hook, api = scripted_hook(base_url=BASE)
    url = "https://files.connectif.test/exports/e1.zip?signature=old"
    api.add("GET", "/exports/e1", httpx.Response(200, json={"id": "e1", "status": "finished", "fileUrl": url}))
    api.add("GET", "/exports/e1.zip", httpx.Response(404, text="NoSuchKey"))
    with pytest.raises(ConnectifError, match="404"):
        hook.download_export("e1", tmp_path / "out")
    assert len(api.calls("GET", "/exports/e1")) == 1


def test_error_report_tried_without_key_first(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add(
        "GET",
        "/imports/abc/errors.csv",
        httpx.Response(401, text="Unauthorized"),
        httpx.Response(200, text="line,field,error\n1,_email,missing\n"),
    )
    rows = hook.download_error_report(f"{BASE}/imports/abc/errors.csv")
    assert rows == [{"line": 1, "field": "_email", "error": "missing"}]
    assert "authorization" not in api.requests[0].headers
    assert api.requests[1].headers["authorization"].startswith("apiKey ")


def test_contacts_products_coupons_workflows(scripted_hook: Any) -> None:
    hook, api = scripted_hook(base_url=BASE)
    api.add("PATCH", "/contacts/a+b@example.com", httpx.Response(200, json={"_email": "a+b@example.com"}))
    api.add("GET", "/contacts/missing@example.com", httpx.Response(404, json={"status": 404, "title": "Not Found"}))
    api.add("DELETE", "/contacts/email/gone@example.com", httpx.Response(404, json={"status": 404}))
    api.add("PATCH", "/products/product-id/p 1", httpx.Response(200, json={"productId": "p 1"}))
    api.add("GET", "/coupon-sets", httpx.Response(200, json={"links": {}, "results": [{"id": "cs1"}]}))
    api.add("GET", "/workflows/w1", httpx.Response(200, json={"id": "w1", "status": "active"}))
    assert hook.upsert_contact("a+b@example.com", {"_name": "A"})["_email"] == "a+b@example.com"
    assert "a%2Bb@example.com" in api.requests[0].url  # '+' must not become a space
    assert json.loads(api.requests[0].body) == {"_name": "A"}
    assert hook.get_contact("missing@example.com") is None
    assert hook.delete_contact("gone@example.com") is False
    assert hook.upsert_product("p 1", {"name": "x"})["productId"] == "p 1"
    assert [c["id"] for c in hook.list_coupon_sets()] == ["cs1"]
    assert hook.get_workflow("w1")["status"] == "active"


def test_api_key_never_logged(scripted_hook: Any, caplog: pytest.LogCaptureFixture) -> None:
    hook, api = scripted_hook(base_url=BASE, max_attempts=2)
    api.add("GET", "/imports/abc", httpx.Response(503, text="down"))
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectifServerError) as info:
        hook.get_import("abc")
    assert TEST_API_KEY not in caplog.text
    assert TEST_API_KEY not in str(info.value)
    assert TEST_API_KEY not in repr(hook)
    assert TEST_API_KEY not in repr(hook.get_settings())
