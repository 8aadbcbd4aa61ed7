"""The real thing: ``airflow standalone`` (scheduler, DAG processor, API server, triggerer, LocalExecutor)
runs ``connectif_contacts`` triggered through the REST API, against the emulator, until success.

This covers what ``dag.test()`` cannot: the DAG parsed by the DAG processor, tasks run by workers through
the execution API, the import operator deferring to the triggerer and resuming, the pool, and the shared
rate-limit bucket used from several processes.
"""

from __future__ import annotations

import json
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


def test_each_test_gets_its_settings_and_leaves_the_stack_as_it_found_it(
    airflow_stack: AirflowStack, tmp_path: Path
) -> None:
    """What ``configured`` promises the tests sharing the stack: their Variables and connections while they run,
    then every DAG paused, no run active, and the Variables and connections as they were."""
    with airflow_stack.client() as client:
        client.create_variable("connectif_mappings_dir", "/kept")  # there before the test: put back afterwards
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": 2525, "extra": {"disable_tls": True}}
    erp_url = f"sqlite:///{tmp_path / 'no-erp.sqlite'}"  # the run may fail: it is ended on leaving
    settings = {"source_url": erp_url, "mappings_dir": ""}
    with airflow_stack.configured(tmp_path, connections={"t": smtp}, **settings), airflow_stack.client() as client:
        assert client.variable("connectif_source_url") == erp_url
        assert client.variable("connectif_state_url") == f"sqlite:///{tmp_path / 'state.sqlite'}"
        assert client.variable("connectif_mappings_dir") == ""
        conn = client._json("GET", "/connections/t")
        assert (conn["host"], conn["port"], json.loads(conn["extra"])) == ("127.0.0.1", 2525, {"disable_tls": True})
        client.set_paused("connectif_products", False)
        run = client.trigger("connectif_products", conf={"dry_run": True})
    with airflow_stack.client() as client:
        assert client.variable("connectif_source_url") is None
        assert client.variable("connectif_mappings_dir") == "/kept"
        assert client._request("GET", "/connections/t").status_code == 404
        assert all(d["is_paused"] for d in client.dags("connectif_"))
        assert client.run("connectif_products", run["dag_run_id"])["state"] in ("success", "failed")
        assert client._request("DELETE", "/variables/connectif_mappings_dir").status_code == 204
