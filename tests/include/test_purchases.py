"""A purchases run's window and its run summary (what the DAG's report publishes), without Airflow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connectif_sync.contract import RunState, SyncObject
from connectif_sync.purchases import PurchaseWindow, purchases_summary

HOUR = (datetime(2026, 3, 2, 9, tzinfo=UTC), datetime(2026, 3, 2, 10, tzinfo=UTC))
REPORT = {"run_id": "lib-1", "extracted": 30, "sent": 8, "unchanged": 2, "invalid": 1, "duplicate": 1,
          "rejected_by_reason": {"contactEmail: invalid email": 1, "purchaseId: duplicate key": 1}}  # fmt: skip


def test_the_window_reaches_back_the_look_back_hours() -> None:
    window = PurchaseWindow.looking_back(*HOUR, hours=24)

    assert window.since == datetime(2026, 3, 1, 9, tzinfo=UTC)
    assert window.as_dict() == {
        "from": "2026-03-01T09:00:00+00:00",
        "to": "2026-03-02T10:00:00+00:00",
        "interval_from": "2026-03-02T09:00:00+00:00",
    }
    assert PurchaseWindow.looking_back(*HOUR, hours=0).since == HOUR[0]
    with pytest.raises(ValueError, match="lookback_hours is -1"):
        PurchaseWindow.looking_back(*HOUR, hours=-1)


def test_a_sent_runs_summary_counts_what_connectif_took_kept_and_repaired() -> None:
    counts: dict[str, Any] = {
        "confirmed": 5, "duplicate": 1, "kept": 2, "contacts_upserted": 3, "products_upserted": 4,
        "api_requests": 17, "kept_reasons": {"E0103": 2}, "kept_sample": ["P7: E0103: url", "P8: E0103: url"],
    }  # fmt: skip
    sent = {"dry_run": False, "trigger_purchase_event": True, "report": REPORT, "counts": counts}

    summary = purchases_summary("connectif_purchases", "run-1", sent, PurchaseWindow.looking_back(*HOUR, 1))

    assert (summary.object, summary.state, summary.library_run_id) == (SyncObject.PURCHASES, RunState.SUCCESS, "lib-1")
    assert (summary.extracted, summary.to_send, summary.sent, summary.unchanged) == (30, 8, 5, 2)
    assert (summary.invalid, summary.duplicate, summary.rejected, summary.api_requests) == (1, 1, 2, 17)
    assert summary.plan is None
    assert summary.notes == [
        "contactEmail: invalid email: 1",
        "purchaseId: duplicate key: 1",
        "2 purchases kept for the next run: {'E0103': 2}",
        "P7: E0103: url",
        "P8: E0103: url",
        "created first in Connectif: 3 contacts (E0101), 4 products (E0102)",
    ]
    data = summary.as_dict()
    assert (data["kept"], data["already_in_connectif"], data["contacts_upserted"], data["products_upserted"]) == (
        2, 1, 3, 4,
    )  # fmt: skip
    assert data["trigger_purchase_event"] is True and data["window"]["from"] == "2026-03-02T08:00:00+00:00"


def test_a_dry_runs_summary_is_the_plan_at_the_rate_limit() -> None:
    sent = {"dry_run": True, "trigger_purchase_event": False, "report": {**REPORT, "sent": 180}}

    summary = purchases_summary("connectif_purchases", "run-2", sent, PurchaseWindow.looking_back(*HOUR, 0))

    assert summary.dry_run and summary.state is RunState.PLANNED and summary.sent == 0
    assert (
        summary.plan
        == summary.api_requests
        == {"api_requests": 180, "expected_minutes": 2.0, "rate_limit_per_minute": 90}
    )
    assert summary.as_dict()["kept"] == 0
