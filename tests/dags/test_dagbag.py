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
