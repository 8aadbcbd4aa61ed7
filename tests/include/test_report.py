"""A bulk run's report (:mod:`connectif_sync.report`): plain JSON for XCom and the run history, the files'
totals, and the API requests and queue waves a plan needs."""

from __future__ import annotations

import json

from connectif_sync.chunk import ChunkFile
from connectif_sync.contract import RunMode
from connectif_sync.report import SyncReport, SyncResult, import_requests


def _files(n: int) -> list[ChunkFile]:
    return [
        ChunkFile(f"/o/contacts-{i:04}.csv", f"/o/contacts-{i:04}.csv.manifest", "contacts", 100, 1000)
        for i in range(n)
    ]


def test_report_as_dict_is_plain_json_with_the_mode_as_text() -> None:
    report = SyncReport(object="contacts", mode=RunMode.INCREMENTAL, since="2025-01-01 00:00:00")
    data = report.as_dict()
    assert data["mode"] == "incremental" and type(data["mode"]) is str  # XCom and the history store plain text
    assert json.loads(json.dumps(data)) == data
    assert SyncReport(object="contacts").as_dict()["mode"] == "full"


def test_finish_totals_the_files_and_the_requests() -> None:
    report = SyncReport(object="contacts", mode=RunMode.PLAN)
    report.finish(_files(11), {"_email: bad": 2}, 1.23456)
    assert (report.files, report.sent, report.bytes, report.duration_s) == (11, 1100, 11000, 1.235)
    assert report.rejected_by_reason == {"_email: bad": 2}
    assert report.api_requests == {
        "imports": 11,
        "min_requests": 22,
        "max_requests_if_every_import_has_errors": 33,
        "queue_waves": 2,  # ten queued imports at a time
        "min_minutes_at_rate_limit": round(22 / 90, 2),
        "rate_limit_per_minute": 90,
    }
    result = SyncResult(report=report, files=_files(11), deleted_keys=["x@y.com"], rejected=[])
    assert result.as_dict()["rejected"] == 2 and len(result.as_dict()["files"]) == 11


def test_no_files_need_no_requests() -> None:
    assert import_requests([]) == {
        "imports": 0,
        "min_requests": 0,
        "max_requests_if_every_import_has_errors": 0,
        "queue_waves": 0,
        "min_minutes_at_rate_limit": 0.0,
        "rate_limit_per_minute": 90,
    }


def test_the_estimate_takes_the_connections_own_budget() -> None:
    """A connection allowed 30 requests a minute plans three times the minutes of the default 90."""
    slow = import_requests(_files(15), per_minute=30)
    assert (slow["min_minutes_at_rate_limit"], slow["rate_limit_per_minute"]) == (1.0, 30)
    report = SyncReport(object="contacts", mode=RunMode.PLAN)
    report.finish(_files(15), {}, 0.1, per_minute=30)
    assert report.api_requests == slow
