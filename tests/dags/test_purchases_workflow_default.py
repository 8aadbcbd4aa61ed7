"""``connectif_purchases`` runs that leave ``trigger_purchase_event`` empty (every scheduled run) follow the
Variable ``connectif_trigger_purchase_event``: ``make demo`` sets it to false, so its runs fire no workflows."""

from __future__ import annotations

import pytest

from tests.fixtures.dags import DagSandbox


def test_the_variable_turns_purchase_workflows_off_for_runs_without_the_param(
    dag_sandbox: DagSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_TRIGGER_PURCHASE_EVENT", "false")

    state, summary = dag_sandbox.run("connectif_purchases")  # the param left empty, as the scheduler does

    assert state == "success", summary
    assert summary["trigger_purchase_event"] is False
    stored = dag_sandbox.emulator.admin.purchases()
    assert stored and summary["sent"] == len(stored)
    assert {p.get("triggerPurchaseEvent") for p in stored} == {False}
