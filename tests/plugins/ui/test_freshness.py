"""Freshness of an object's syncs against its cron schedule (the Connectif page's on time / late / failing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectif_provider.ui.data import DagStatus, Freshness, judge_freshness

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _status(**kw: object) -> DagStatus:
    fields: dict[str, object] = {"schedule": "0 2 * * *", "last_state": "success", "last_finished_state": "success"}
    return DagStatus(dag_id="connectif_contacts", exists=True, **{**fields, **kw})  # type: ignore[arg-type]


def test_on_time_when_the_last_success_follows_the_last_fire() -> None:
    assert judge_freshness(_status(last_success=NOW.replace(hour=2, minute=3)), NOW) == Freshness.ON_TIME


def test_late_when_no_success_since_the_schedule_fired_and_the_grace_passed() -> None:
    yesterday = NOW.replace(hour=2) - timedelta(days=1)
    assert judge_freshness(_status(last_success=yesterday), NOW) == Freshness.LATE
    # within the grace (a quarter of the day, at most 2 h) it is not late yet
    assert judge_freshness(_status(last_success=yesterday), NOW.replace(hour=3, minute=30)) == Freshness.ON_TIME


def test_failing_paused_and_never_run() -> None:
    failed = _status(last_success=NOW - timedelta(hours=1))
    failed.last_finished_state = "failed"
    assert judge_freshness(failed, NOW) == Freshness.FAILING
    assert judge_freshness(_status(last_success=NOW - timedelta(days=9), paused=True), NOW) == Freshness.PAUSED
    never = DagStatus(dag_id="connectif_contacts", exists=True, schedule="0 2 * * *")
    assert judge_freshness(never, NOW) == Freshness.NEVER
    assert judge_freshness(_status(last_success=None, schedule="@asset"), NOW) == Freshness.ON_TIME
