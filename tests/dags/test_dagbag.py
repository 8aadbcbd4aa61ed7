"""Every DAG parses without touching a database or a connection, and follows the project's rules."""

from __future__ import annotations

from typing import Any

import pytest

EXPECTED = {
    "connectif_contacts",
    "connectif_products",
    "connectif_purchases",
    "connectif_coupons",
    "connectif_exports",
    "connectif_contact_erasure",
}


def test_no_import_errors_and_every_dag_is_there(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_conventions(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.get_dag(dag_id)
    assert dag is not None, dagbag.import_errors
    assert "connectif" in dag.tags
    assert dag.doc_md and len(dag.doc_md) > 200
    assert dag.max_active_runs == 1
    assert "dry_run" in dag.params
    assert dag.params["dry_run"] is False
    for t in dag.tasks:
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert t.retry_exponential_backoff, f"{dag_id}.{t.task_id} retries without backoff"
    assert "report" in dag.task_dict, "every DAG ends with a report task that publishes the run summary"


#: DAGs whose runs sync the ERP's current state whatever their date: a backfill would only repeat them.
CURRENT_STATE = {"connectif_contacts", "connectif_products", "connectif_coupons", "connectif_contact_erasure"}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_only_interval_dags_accept_backfills(dagbag: Any, dag_id: str) -> None:
    from airflow.sdk.api.datamodels._generated import DagRunType

    dag = dagbag.get_dag(dag_id)
    if dag_id in CURRENT_STATE:
        # Every run type but backfill: scheduled, manual, triggered by another DAG or an asset all still work.
        assert dag.allowed_run_types == frozenset(DagRunType) - {DagRunType.BACKFILL}
    else:  # purchases (hourly windows) and exports (weekly windows replace their rows): backfills allowed
        assert dag.allowed_run_types is None


def test_purchases_send_one_interval_at_a_time_through_their_pool(dagbag: Any) -> None:
    import json
    from pathlib import Path

    dag = dagbag.get_dag("connectif_purchases")
    assert dag.task_dict["send"].pool == "connectif_purchases"
    pools = json.loads((Path(__file__).resolve().parents[2] / "pools.json").read_text())
    assert pools["connectif_purchases"]["slots"] == 1


def test_every_connectif_dag_has_failure_callbacks_and_a_deadline(dagbag: Any) -> None:
    for dag_id in ("connectif_contacts", "connectif_products", "connectif_purchases", "connectif_contact_erasure",
                   "connectif_coupons", "connectif_exports"):  # fmt: skip
        dag = dagbag.get_dag(dag_id)
        assert dag.on_failure_callback and dag.on_success_callback, dag_id
        assert dag.deadline, dag_id


#: DAGs on a cron trigger (purchases' hourly data intervals run the latest complete hour on unpausing).
CRON_TRIGGERED = sorted(EXPECTED - {"connectif_purchases"})


@pytest.mark.parametrize("dag_id", CRON_TRIGGERED)
def test_unpausing_waits_for_the_next_scheduled_time(dagbag: Any, dag_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpaused minutes after its scheduled time, a DAG that never ran waits for the next one: Airflow's default
    would run the past time at once (within a tenth of the period), a run nobody triggered that raced the one
    the deployment check triggers (``deploy/distributed.py`` failed between 02:00 and 04:24 UTC)."""
    from datetime import timedelta

    import airflow.timetables.trigger as core_trigger
    import pendulum
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable
    from airflow.timetables.base import TimeRestriction

    timetable = decode_timetable(encode_timetable(dagbag.get_dag(dag_id).timetable))
    scheduled = timetable._align_to_prev(pendulum.now("UTC"))  # the latest scheduled time
    now = pendulum.instance(scheduled + timedelta(minutes=1))
    monkeypatch.setattr(core_trigger, "utcnow", lambda: now)
    first = timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=None, latest=None, catchup=False)
    )
    assert first is not None and first.run_after > now
