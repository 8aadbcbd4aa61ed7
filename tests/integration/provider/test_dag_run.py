"""The provider in Airflow: DAG runs through ``dag.test()`` (migrated metadata DB, the emulator over HTTP) and
the pools file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emulator.testing import RunningEmulator


def _register(dag: Any) -> None:
    """dag.test() needs the DAG serialised in the metadata DB; a DAG defined in a test is in no bundle."""
    from types import SimpleNamespace

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = SimpleNamespace(
        dags={dag.dag_id: dag}, import_errors={}, bundle_path=None, dag_warnings=set(), file_last_changed={}
    )
    sync_bag_to_db(bag, "dags-folder", None)  # type: ignore[arg-type]


def _contacts(path: Path, n: int) -> Path:
    path.write_text("_email,_name\n" + "".join(f"u{i}@example.com,U{i}\n" for i in range(n)), encoding="utf-8")
    return path


def test_dag_uploads_defers_and_completes(
    airflow_db: Path, emulator: RunningEmulator, connectif_conn: Any, tmp_path: Path
) -> None:
    """A DAG with a deferrable import: dag.test() runs the trigger inline and resumes the task."""
    from airflow.cli.commands.pool_command import pool_import_helper
    from airflow.sdk import DAG, task

    from connectif_provider.operators.connectif import ConnectifImportOperator

    pool_import_helper(str(Path(__file__).resolve().parents[3] / "pools.json"))
    conn_id = connectif_conn(base_url=emulator.base_url, api_key=emulator.api_key, rate_limit_per_minute=600)
    emulator.admin.configure(rate_limit=1000, import_rows_per_s=50)
    files = [str(_contacts(tmp_path / f"chunk-{i}.csv", 5)) for i in range(2)]
    seen: dict[str, Any] = {}

    with DAG("connectif_provider_test_import", schedule=None, catchup=False) as dag:
        imports = ConnectifImportOperator.partial(
            task_id="upload",
            import_type="contacts",
            connectif_conn_id=conn_id,
            poll_interval=0.2,
            pool="connectif_imports",
        ).expand(file_path=files)

        @task
        def collect(summaries: list[dict[str, Any]]) -> None:
            seen["summaries"] = list(summaries)

        collect(imports.output)

    _register(dag)
    run = dag.test()
    assert run.state == "success"
    summaries = seen["summaries"]
    assert sorted(s["file_path"] for s in summaries) == sorted(files)
    assert all(s["status"] == "finished" and s["success"] == 5 and s["errors"] == 0 for s in summaries)
    assert len(emulator.admin.imports()) == 2
    assert len(emulator.admin.contacts()) == 5  # both chunks carry the same five emails
    _assert_key_not_stored(run.dag_id, run.run_id, emulator.api_key)


def _assert_key_not_stored(dag_id: str, run_id: str, api_key: str) -> None:
    """Neither XCom nor the rendered template fields of the run hold the API key (or its secret half)."""
    from airflow import settings
    from sqlalchemy import text

    secret = api_key.split(":")[-1]
    with settings.Session() as session:
        xcoms = session.execute(
            text("SELECT value FROM xcom WHERE dag_id = :d AND run_id = :r"), {"d": dag_id, "r": run_id}
        ).all()
        rendered = session.execute(
            text("SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = :d AND run_id = :r"),
            {"d": dag_id, "r": run_id},
        ).all()
        triggers = session.execute(text("SELECT kwargs FROM trigger")).all()
    assert xcoms and rendered
    for (value,) in [*xcoms, *rendered, *triggers]:
        assert secret not in str(value)


def test_pools_file_imports_with_deferred_slots(airflow_db: Path) -> None:
    from airflow.cli.commands.pool_command import pool_import_helper
    from airflow.models.pool import Pool

    repo = Path(__file__).resolve().parents[3]
    pool_import_helper(str(repo / "pools.json"))
    imports, exports = Pool.get_pool("connectif_imports"), Pool.get_pool("connectif_exports")
    assert imports is not None and exports is not None
    assert (imports.slots, imports.include_deferred) == (10, True)
    assert (exports.slots, exports.include_deferred) == (5, True)


def test_dag_retry_after_upload_reattaches(
    airflow_db: Path, emulator: RunningEmulator, connectif_conn: Any, tmp_path: Path
) -> None:
    """The first try dies after uploading; the retry finds the import id in task_state_store."""
    from datetime import timedelta

    from airflow.sdk import DAG

    from connectif_provider.operators.connectif import ConnectifImportOperator

    class DiesOnceAfterUpload(ConnectifImportOperator):
        def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
            if context["ti"].try_number == 1:
                raise RuntimeError("worker lost after the upload")
            return super().execute_complete(context, event)

    conn_id = connectif_conn(base_url=emulator.base_url, api_key=emulator.api_key, rate_limit_per_minute=600)
    emulator.admin.configure(rate_limit=1000)
    path = str(_contacts(tmp_path / "chunk.csv", 3))
    with DAG("connectif_provider_test_retry", schedule=None, catchup=False) as dag:
        DiesOnceAfterUpload(
            task_id="upload",
            file_path=path,
            import_type="contacts",
            connectif_conn_id=conn_id,
            poll_interval=0.2,
            retries=1,
            retry_delay=timedelta(seconds=0),
        )
    _register(dag)
    run = dag.test()
    assert run.state == "success"
    assert len(emulator.admin.imports()) == 1
