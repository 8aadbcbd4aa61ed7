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
