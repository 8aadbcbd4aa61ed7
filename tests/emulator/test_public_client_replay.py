"""Replays, request for request, what the public Node CLI ``connectif-2-gc-storage`` sends (contract section 6).

The CLI (github.com/francescorivola/connectif-2-gc-storage, by a Connectif developer; its latest sources we
could read: package.json 0.4.0, ``src/cli.ts`` with ``export-data-explorer`` and ``--activityTypes``) is
evidence of what the real API accepts. It is not on the npm registry reachable from here, so its requests are
replayed as its sources build them (``src/cli.ts``, ``src/connectif-api.ts``, ``src/fs.ts``), with only the
base URL changed to the emulator's:

- create: ``POST <base>/exports`` (no trailing slash), headers ``Authorization: apiKey <key>`` and
  ``Content-Type: application/json``, body ``JSON.stringify`` of ``{exportType, delimiter: ",", dateFormat:
  "ISO", filters}`` (no ``version``; ``undefined`` options vanish). ``export-activities`` builds ``filters``
  as ``{toDate, fromDate, segmentId, activityType: "<--activityTypes>".split(",")}`` -- ``activityType``
  singular; ``export-data-explorer`` posts ``{delimiter, filters: {reportId, fromDate, toDate}}`` to
  ``<base>/exports/type/data-explorer``. Only ``id`` is read from the 201.
- poll: ``GET <base>/exports/{id}`` with the key only, reading ``status``, ``fileUrl``, ``total``,
  ``progress``; ``finished`` ends it, ``error`` fails it, anything else waits 1 s and asks again.
- download: ``GET fileUrl`` with no headers of its own (node-fetch defaults), then every ZIP entry is unzipped.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from emulator.testing import RunningEmulator

#: What node-fetch 2 adds to every request when the caller sets nothing else.
NODE_FETCH_HEADERS = {
    "Accept": "*/*",
    "User-Agent": "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "Accept-Encoding": "gzip,deflate",
    "Connection": "close",
}
POLL_INTERVAL_S = 1.0  # the CLI's wait between two GETs of the export


class CliError(Exception):
    """The error the CLI would print (same wording as its sources)."""


@dataclass
class CliRun:
    export_id: str
    polls: list[dict[str, Any]]
    files: dict[str, bytes]


def js_stringify(value: dict[str, Any]) -> bytes:
    """``JSON.stringify``: no spaces, keys in insertion order, ``undefined`` (None here) members left out."""

    def strip(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: strip(v) for k, v in item.items() if v is not None}
        return item

    return json.dumps(strip(value), separators=(",", ":"), ensure_ascii=False).encode()


def error_message(response: httpx.Response) -> str:
    """The CLI's ``getErrorMessageFromResponse``: status text, then detail and validation errors if JSON."""
    if "application/json" not in response.headers.get("content-type", ""):
        return response.reason_phrase
    body = response.json()
    errors = ",".join(f"\n{v['path']}: {v['reason']}" for v in body.get("validationErrors") or [])
    return f"{response.reason_phrase} - {body.get('detail')}{errors}"


def run_cli(emu: RunningEmulator, request: dict[str, Any]) -> CliRun:
    """One CLI command: create the export, poll it until finished, download the ZIP and unzip it."""
    if request["exportType"] == "data-explorer":
        url, body = (
            emu.url("/exports/type/data-explorer"),
            {"delimiter": request["delimiter"], "filters": request["filters"]},
        )
    else:
        url, body = emu.url("/exports"), request
    key = {"Authorization": f"apiKey {emu.api_key}"}
    with httpx.Client(headers=NODE_FETCH_HEADERS, timeout=30) as http:
        created = http.post(url, content=js_stringify(body), headers={**key, "Content-Type": "application/json"})
        if not created.is_success:
            raise CliError(f"Error response while creating export: {error_message(created)}")
        export_id = str(created.json()["id"])
        polls: list[dict[str, Any]] = []
        while True:
            response = http.get(emu.url(f"/exports/{export_id}"), headers=key)
            if not response.is_success:
                raise CliError(f"Error response while checking progress export: {error_message(response)}")
            data = response.json()
            polls.append({k: data.get(k) for k in ("status", "fileUrl", "total", "progress")})
            if data["status"] == "finished":
                break
            if data["status"] == "error":
                raise CliError("Export has finished with error status")
            time.sleep(POLL_INTERVAL_S)
        file_url = polls[-1]["fileUrl"]
        download = http.get(file_url)
        if not download.is_success:
            raise CliError(f"Error response while downloading export {file_url}: {download.reason_phrase}")
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    return CliRun(export_id, polls, {name: archive.read(name) for name in archive.namelist()})


def rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def export_activities(from_date: str, to_date: str, activity_types: str | None = None) -> dict[str, Any]:
    """The body of ``export-activities -f FROM -t TO [-y TYPES]`` (no ``-s``)."""
    filters: dict[str, Any] = {"toDate": to_date, "fromDate": from_date, "segmentId": None}
    if activity_types:
        filters["activityType"] = activity_types.split(",")
    return {"exportType": "activities", "delimiter": ",", "dateFormat": "ISO", "filters": filters}


def seed(emu: RunningEmulator) -> None:
    emu.admin.seed_contacts([{"_email": "ann@example.com", "_name": "Ann"}, {"_email": "bob@example.com"}])
    emu.admin.seed_products(
        [{"productId": "P1", "name": "Shoe", "productDetailUrl": "https://shop.example.com/p1", "unitPrice": 10}]
    )
    line = {"productId": "P1", "name": "Shoe", "productDetailUrl": "https://shop.example.com/p1", "unitPrice": 10}
    purchase = {
        "purchaseId": "O1",
        "contactEmail": "ann@example.com",
        "cartId": "C1",
        "purchaseDate": "2026-03-10T12:30:00Z",
        "totalPrice": 20,
        "totalQuantity": 2,
        "products": [{**line, "quantity": 2, "price": 20}],
    }
    assert emu.http.post("/purchases", json=purchase).status_code == 201
    emu.admin.seed_activities(
        [
            {"contactEmail": "bob@example.com", "type": "register", "date": "2026-03-02T09:00:00Z"},
            {"contactEmail": "bob@example.com", "type": "login", "date": "2026-03-05T08:00:00Z"},
            {"contactEmail": "ann@example.com", "type": "email-opened", "date": "2026-03-11T09:00:00Z"},
            {"contactEmail": "ann@example.com", "type": "cart-abandoned", "date": "2026-03-12T09:00:00Z"},
            {"contactEmail": "ann@example.com", "type": "register", "date": "2026-04-20T09:00:00Z"},  # out of range
        ]
    )


def split(run: CliRun) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The activities CSV and its products CSV, checking the names the CLI files them under."""
    (products_name,) = [n for n in run.files if n.endswith("-products.csv")]
    stem = products_name.removesuffix("-products.csv")
    assert stem.startswith("export-activities-") and sorted(run.files) == sorted([f"{stem}.csv", products_name])
    return rows(run.files[f"{stem}.csv"]), rows(run.files[products_name])


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_cli_activities_export_with_activity_types_holds_only_those(emulator: RunningEmulator, strict: bool) -> None:
    seed(emulator)
    emulator.admin.configure(strict_unknown_fields=strict)
    request = export_activities("2026-03-01", "2026-03-31", "purchase,register")
    assert js_stringify(request) == (
        b'{"exportType":"activities","delimiter":",","dateFormat":"ISO",'
        b'"filters":{"toDate":"2026-03-31","fromDate":"2026-03-01","activityType":["purchase","register"]}}'
    )
    run = run_cli(emulator, request)
    activities, products = split(run)
    assert sorted((a["type"], a["contactEmail"]) for a in activities) == [
        ("purchase", "ann@example.com"),
        ("register", "bob@example.com"),
    ]
    (purchase,) = [a for a in activities if a["type"] == "purchase"]
    assert [(p["activityId"], p["productId"], p["quantity"]) for p in products] == [(purchase["activityId"], "P1", "2")]
    assert run.polls[-1]["total"] == run.polls[-1]["progress"] == 2
    (job,) = emulator.admin.exports()
    assert job["filters"]["activityTypes"] == ["purchase", "register"]


def test_cli_activities_export_without_types_polls_until_finished(emulator: RunningEmulator) -> None:
    seed(emulator)
    emulator.admin.configure(export_processing_s=1.5)
    run = run_cli(emulator, export_activities("2026-03-01", "2026-03-31"))
    assert len(run.polls) >= 2 and [p["status"] for p in run.polls[:-1]] != ["finished"]
    assert all(isinstance(p["total"], int) and isinstance(p["progress"], int) for p in run.polls)
    assert all(p["fileUrl"] is None for p in run.polls[:-1])
    activities, products = split(run)
    assert sorted(a["type"] for a in activities) == ["cart-abandoned", "email-opened", "login", "purchase", "register"]
    assert [p["productId"] for p in products] == ["P1"]


@pytest.mark.parametrize("segment", [None, "64b7f0c2a1b2c3d4e5f60718"], ids=["all", "segment"])
def test_cli_contacts_export(emulator: RunningEmulator, segment: str | None) -> None:
    seed(emulator)
    request = {"exportType": "contacts", "delimiter": ",", "dateFormat": "ISO", "filters": {"segmentId": segment}}
    run = run_cli(emulator, request)
    ((name, data),) = run.files.items()
    assert name.startswith("export-contacts-") and name.endswith(".csv")
    assert sorted(r["_email"] for r in rows(data)) == ["ann@example.com", "bob@example.com"]


def test_cli_data_explorer_export(emulator: RunningEmulator) -> None:
    seed(emulator)
    request = {
        "exportType": "data-explorer",
        "delimiter": ",",
        "dateFormat": "ISO",
        "filters": {"reportId": "R1", "fromDate": "2026-03-09", "toDate": "2026-03-11"},
    }
    run = run_cli(emulator, request)
    ((_name, data),) = run.files.items()
    assert [(r["date"], r["purchases"]) for r in rows(data)] == [
        ("2026-03-09", "0"),
        ("2026-03-10", "1"),
        ("2026-03-11", "0"),
    ]


def test_cli_reports_a_refused_request_the_way_it_prints_it(emulator: RunningEmulator) -> None:
    """A strict emulator refusing a field the contract does not name: the CLI's message names the field."""
    emulator.admin.configure(strict_unknown_fields=True)
    request = export_activities("2026-03-01", "2026-03-31")
    request["filters"]["activity"] = ["login"]
    with pytest.raises(CliError) as info:
        run_cli(emulator, request)
    assert str(info.value) == (
        "Error response while creating export: Unprocessable Entity - "
        "filters.activity: Extra inputs are not permitted\nfilters.activity: Extra inputs are not permitted"
    )
    assert emulator.admin.exports() == []
