"""The end of a bulk sync run: imports committed as Connectif confirmed them, and the run summary, without Airflow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from connectif_sync.bulk import bulk_run_end, planned_summary
from connectif_sync.contract import RunState, SyncObject
from connectif_sync.state import StateStore

REPORT = {"mode": "full", "run_id": "lib-7", "extracted": 100, "new": 10, "changed": 5, "unchanged": 80,
          "deleted": 2, "invalid": 3, "duplicate": 1, "suppressed": 1, "oversize": 1, "files": 3, "bytes": 999,
          "sent": 15, "api_requests": {"api_requests": 12},
          "rejected_by_reason": {"email: invalid email": 3}}  # fmt: skip
NO_VERDICT: dict[str, Any] = {}


class Ledger:
    """``confirm_import`` as the state store answers it: confirmed/failed rows, or ``unconfirmed`` with a reason."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.confirmed: list[str] = []

        self.rejected: list[tuple[str, str, dict[str, Any]]] = []

    def confirm_import(self, result: Mapping[str, Any]) -> dict[str, Any]:
        self.confirmed.append(result["import_id"])
        return self.answers[result["import_id"]]

    def rejected_page(self, obj: str, run_id: str, *, key: str, limit: int) -> list[dict[str, Any]]:
        return [r for o, rid, r in self.rejected if (o, rid) == (obj, run_id) and r["key"] == key][:limit]

    def record_rejected(self, obj: str, run_id: str, rows: list[dict[str, Any]]) -> None:
        self.rejected += [(obj, run_id, r) for r in rows]


def imported(import_id: str, rejected: list[dict[str, Any]] | None = None, requests: int = 4) -> dict[str, Any]:
    return {"import_id": import_id, "status": "finished", "total": 5, "success": 5, "errors": 0,
            "file_path": f"/w/{import_id}.csv", "rejected_rows": rejected or [], "api_requests": requests}  # fmt: skip


def summary(dry_run: bool = False) -> Any:
    return planned_summary("connectif_contacts", "run-1", SyncObject.CONTACTS, REPORT, dry_run=dry_run)


def test_the_plan_is_copied_from_the_extract_report() -> None:
    planned = summary()

    assert (planned.mode, planned.library_run_id, planned.to_send, planned.files, planned.deleted) == (
        "full", "lib-7", 15, 3, 2,
    )  # fmt: skip
    assert planned.plan is None and summary(dry_run=True).plan == {"api_requests": 12}


def test_confirmed_rows_and_connectifs_rejects_are_counted_and_the_run_succeeds() -> None:
    ledger = Ledger({"i1": {"confirmed": 5, "failed": 0}, "i2": {"confirmed": 3, "failed": 2}})
    rejected = [{"line": 2, "field": "_email", "error": "bad"}, {"line": 3, "field": "_email", "error": "bad"}]
    results = [imported("i1"), imported("i2", rejected)]

    end = bulk_run_end(summary(), report=REPORT, deleted_keys=["a", "b"], files=2, results=results,
                       verdict=NO_VERDICT, decision=None, store=cast(StateStore, ledger))  # fmt: skip

    s = end.summary
    assert ledger.confirmed == ["i1", "i2"] and end.failure("contacts") is None
    assert (s.state, s.sent, s.rejected_by_connectif, s.imports, s.api_requests) == (RunState.SUCCESS, 8, 2, 2, 8)
    assert s.rejected == 3 + 1 + 1 + 1 + 2  # invalid, duplicate, oversize, suppressed, Connectif's
    assert s.rejected_by_reason == {"email: invalid email": 3, "Connectif: _email bad": 2}
    assert "2 keys confirmed earlier are gone from the source, e.g. ['a', 'b']" in s.notes
    assert s.extra["guardrail"] == {"fired": [], "held": False, "would_hold": False, "decision": None}
    # Connectif's rejects are filed with the run's rejected rows, by line (no manifest here: no key), once
    assert [(o, rid, r["source_ref"], r["reason"]) for o, rid, r in ledger.rejected] == [
        ("contacts", "lib-7", "i2.csv line 2", "Connectif: _email bad"),
        ("contacts", "lib-7", "i2.csv line 3", "Connectif: _email bad"),
    ]


def test_an_unfinished_or_unproven_import_leaves_the_run_incomplete_and_says_why_it_fails() -> None:
    ledger = Ledger({"i1": {"confirmed": 0, "failed": 0, "unconfirmed": 5, "reason": "no error report"}})

    end = bulk_run_end(summary(), report=REPORT, deleted_keys=[], files=3, results=[imported("i1")],
                       verdict=NO_VERDICT, decision=None, store=cast(StateStore, ledger))  # fmt: skip

    assert end.summary.state is RunState.INCOMPLETE and end.summary.api_requests == {"api_requests": 12}
    assert end.unfinished == 2 and end.summary.extra["unconfirmed"] == 5
    assert "not confirmed, sent again next run: no error report" in end.summary.notes
    assert "2 of 3 imports did not finish; their rows go again next run" in end.summary.notes
    assert str(end.failure("contacts")).startswith("2 of 3 contacts imports did not finish")
    end.unfinished = 0
    assert "finished without an answer that proves which rows Connectif took (no error report)" in str(
        end.failure("contacts")
    )


def test_a_dry_run_commits_nothing_and_reports_what_the_guardrail_would_do() -> None:
    verdict = {"fired": ["blanked_field"], "hold": False, "would_hold": True}

    end = bulk_run_end(summary(dry_run=True), report=REPORT, deleted_keys=[], files=0, results=[],
                       verdict=verdict, decision=None, store=None)  # fmt: skip

    assert end.summary.state is RunState.PLANNED and end.summary.sent == 0 and end.failure("contacts") is None
    assert "guardrail would hold the run: blanked_field" in end.summary.notes
    assert end.summary.extra["guardrail"]["would_hold"] is True


def test_a_held_back_upload_says_nothing_was_sent() -> None:
    end = bulk_run_end(summary(), report=REPORT, deleted_keys=[], files=0, results=[],
                       verdict={"fired": ["mass_change"], "hold": True}, decision="rejected",
                       store=cast(StateStore, Ledger({})))  # fmt: skip

    assert end.summary.state is RunState.SUCCESS and end.summary.sent == 0
    assert end.summary.notes[-2:] == ["guardrail held the run: mass_change", "upload rejected: nothing was sent"]
