"""The real thing: ``airflow standalone`` (scheduler, DAG processor, API server, triggerer, LocalExecutor)
runs ``connectif_contacts`` triggered through the REST API, against the emulator, until success.

This covers what ``dag.test()`` cannot: the DAG parsed by the DAG processor, tasks run by workers through
the execution API, the import operator deferring to the triggerer and resuming, the pool, and the shared
rate-limit bucket used from several processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.testing import RunningEmulator
from tests.fixtures.airflow_stack import AirflowStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


@pytest.fixture
def standalone(tmp_path: Path, emulator: RunningEmulator, airflow_stack: AirflowStack) -> Iterator[AirflowStack]:
    """The session's Airflow, running this test's sample ERP into a fresh state store."""
    from sample_erp import generate

    erp_url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    generate(erp_url, contacts=300, products=20, orders=10, coupons=30, seed=7)
    with airflow_stack.configured(tmp_path, source_url=erp_url) as stack:
        yield stack


def test_contacts_dag_runs_through_scheduler_worker_and_triggerer(
    standalone: AirflowStack, emulator: RunningEmulator
) -> None:
    with standalone.client() as client:
        client.set_paused("connectif_contacts", False)
        run = client.trigger("connectif_contacts", conf={})
        final = client.wait_for_run("connectif_contacts", run["dag_run_id"], timeout=300)
        states = {ti["task_id"]: ti["state"] for ti in client.task_instances("connectif_contacts", run["dag_run_id"])}
        log_tail = standalone.log_path.read_text()[-4000:]
        assert final["state"] == "success", f"run ended {final['state']}: {states}\n{log_tail}"
        summary = client.xcom("connectif_contacts", run["dag_run_id"], "report", key="summary")

    stored = emulator.admin.contacts()
    assert summary["sent"] == len(stored) > 0
    assert summary["imports"] >= 1
    imports = emulator.admin.imports()
    assert [i["status"] for i in imports] == ["finished"] * len(imports)
