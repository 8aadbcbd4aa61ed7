"""The real thing: ``airflow standalone`` (scheduler, DAG processor, API server, triggerer, LocalExecutor)
runs ``connectif_contacts`` triggered through the REST API, against the emulator, until success.

This covers what ``dag.test()`` cannot: the DAG parsed by the DAG processor, tasks run by workers through
the execution API, the import operator deferring to the triggerer and resuming, the pool, and the shared
rate-limit bucket used from several processes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.processes import marked_processes, sweep
from demo.standalone import REPO, AirflowStandalone
from emulator.testing import RunningEmulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


@pytest.fixture
def standalone(tmp_path: Path, emulator: RunningEmulator) -> Iterator[tuple[AirflowStandalone, dict[str, object]]]:
    from sample_erp import generate

    data = tmp_path / "data"
    data.mkdir()
    erp_url = f"sqlite:///{data / 'erp.sqlite'}"
    gen = generate(erp_url, contacts=300, products=20, orders=10, coupons=30, seed=7)
    connection = {
        "conn_type": "connectif",
        "host": emulator.base_url,
        "password": emulator.api_key,
        "extra": {"rate_limit_backend": f"sqlite:///{data / 'rate-limit.sqlite'}"},
    }
    env = {
        "AIRFLOW_CONN_CONNECTIF_DEFAULT": json.dumps(connection),
        "AIRFLOW_VAR_CONNECTIF_SOURCE_URL": erp_url,
        "AIRFLOW_VAR_CONNECTIF_STATE_URL": f"sqlite:///{data / 'state.sqlite'}",
        "AIRFLOW_VAR_CONNECTIF_WAREHOUSE_URL": f"sqlite:///{data / 'warehouse.sqlite'}",
        "AIRFLOW_VAR_CONNECTIF_WORK_DIR": str(data / "work"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "CONNECTIF_POLL_INTERVAL": "2",
    }
    marker = uuid.uuid4().hex
    airflow = AirflowStandalone(tmp_path / "airflow", marker=marker, extra_env=env)
    try:
        airflow.prepare(pools_file=REPO / "pools.json")
        airflow.start()
        yield airflow, gen.as_dict(with_ids=True)
    finally:
        airflow.stop()
        left = sweep(marker)
        assert not left, f"processes left behind by airflow standalone: {left}"
    assert marked_processes(marker) == []


def test_contacts_dag_runs_through_scheduler_worker_and_triggerer(
    standalone: tuple[AirflowStandalone, dict[str, object]], emulator: RunningEmulator
) -> None:
    airflow, _generated = standalone
    airflow.wait_ready(timeout=180)
    with airflow.client() as client:
        airflow.wait_for_dags(client, ["connectif_contacts"], timeout=120)
        client.set_paused("connectif_contacts", False)
        run = client.trigger("connectif_contacts", conf={})
        final = client.wait_for_run("connectif_contacts", run["dag_run_id"], timeout=300)
        states = {ti["task_id"]: ti["state"] for ti in client.task_instances("connectif_contacts", run["dag_run_id"])}
        log_tail = airflow.log_path.read_text()[-4000:]
        assert final["state"] == "success", f"run ended {final['state']}: {states}\n{log_tail}"
        summary = client.xcom("connectif_contacts", run["dag_run_id"], "report", key="summary")

    stored = emulator.admin.contacts()
    assert summary["sent"] == len(stored) > 0
    assert summary["imports"] >= 1
    imports = emulator.admin.imports()
    assert [i["status"] for i in imports] == ["finished"] * len(imports)
