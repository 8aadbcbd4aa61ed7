"""Faults of issue 12: an import whose error report is missing or short, and an upload whose answer is held
back until the client is gone (the import exists, the client never learns its id)."""

from __future__ import annotations

import time

import httpx
import pytest

from emulator.testing import RunningEmulator
from tests.fixtures.emulator import upload_csv

BAD_ROWS = "_email,_points\na@example.com,1\nnot-an-email,2\nb@example.com,x\nc@example.com,3\n"


def finished(emu: RunningEmulator, import_id: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        item = emu.http.get(f"/imports/{import_id}").json()
        if item["status"] in ("finished", "error"):
            return item
        assert time.monotonic() < deadline
        time.sleep(0.05)


def report_lines(emu: RunningEmulator, url: str) -> list[str]:
    return emu.anon.get(url).text.strip().splitlines()[1:]


def test_complete_report_by_default(emulator: RunningEmulator) -> None:
    item = finished(emulator, upload_csv(emulator, BAD_ROWS).json()["id"])
    assert item["errors"] == 2
    assert [line.split(",")[0] for line in report_lines(emulator, item["errorReportFileUrl"])] == ["2", "3"]


def test_missing_report(emulator: RunningEmulator) -> None:
    emulator.admin.faults(error_report="missing")
    item = finished(emulator, upload_csv(emulator, BAD_ROWS).json()["id"])
    assert item["errors"] == 2 and "errorReportFileUrl" not in item


def test_short_report_leaves_out_the_last_failed_line(emulator: RunningEmulator) -> None:
    emulator.admin.faults(error_report="short")
    item = finished(emulator, upload_csv(emulator, BAD_ROWS).json()["id"])
    assert item["errors"] == 2
    assert [line.split(",")[0] for line in report_lines(emulator, item["errorReportFileUrl"])] == ["2"]


def test_held_answer_creates_the_import_but_never_answers(emulator: RunningEmulator) -> None:
    emulator.admin.faults(hold_import_answers=True)
    with pytest.raises(httpx.ReadTimeout):
        emulator.anon.post(
            emulator.url("/imports"),
            headers=emulator.headers,
            data={"type": "contacts", "delimiter": ",", "overrideExisting": "true", "updateOnlyEmptyFields": "false"},
            files={"file": ("data.csv", "_email\na@example.com\n", "text/csv")},
            timeout=httpx.Timeout(10, read=2),
        )
    (created,) = emulator.admin.imports()
    assert finished(emulator, created["id"])["success"] == 1
    assert emulator.admin.stats()["faults"]["held"] == 1
    emulator.admin.faults()
    assert upload_csv(emulator, "_email\nb@example.com\n").status_code == 201  # answers flow again
