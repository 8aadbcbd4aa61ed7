"""Weekly: export contacts and the week's activities from Connectif into warehouse tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, TriggerRule, get_current_context, task
from connectif_dags import exports
from connectif_dags.alerting import dag_alerting
from connectif_dags.common import CONN_ID, DEFAULT_ARGS, EXPORTS_POOL, POLL_INTERVAL, TAGS, cron_schedule, dry_run_param

from connectif_provider.operators.connectif import ConnectifExportOperator

DOC = """
### Connectif → warehouse, weekly

Exports **all contacts** and **the week's activities** (purchases, logins, email opens...) from Connectif
and loads them into the warehouse (Variable `connectif_warehouse_url`, any SQLAlchemy URL):

| table | from |
|---|---|
| `connectif_contacts` | the contacts export (a weekly snapshot) |
| `connectif_activities` | the activities export of the run's data interval |
| `connectif_activity_products` | the products of those activities |

Every row carries `etl_window_start` / `etl_window_end` (the run's data interval). A re-run, or a
backfill of past weeks, **replaces its window** in one transaction: rows are never duplicated, and a
failed load leaves the previous data in place. An activities range over 31 days is split into several
exports; waits happen deferred in pool `connectif_exports` (5 slots = the account's 5 queued exports).

**Params** — `dry_run`: show the exports that would be created and the API requests, create nothing.
"""

with DAG(
    dag_id="connectif_exports",
    description="Weekly export of Connectif contacts and activities into the warehouse",
    schedule=cron_schedule("0 5 * * 1", interval=exports.WEEK),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={"dry_run": dry_run_param()},
    tags=[*TAGS, "exports", "warehouse"],
    doc_md=DOC,
    **dag_alerting("connectif_exports", late_after=timedelta(hours=3)),
) as dag:

    @task
    def plan() -> dict[str, Any]:
        """The window and the exports it needs (Connectif takes at most 31 days per activities export)."""
        return exports.plan(get_current_context())

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def unless_dry_run(planned: dict[str, Any]) -> bool:
        """A dry run stops here: the exports are skipped, the report still runs."""
        return not planned["dry_run"]

    planned = plan()
    waiting = {"connectif_conn_id": CONN_ID, "poll_interval": POLL_INTERVAL, "pool": EXPORTS_POOL}
    export_contacts = ConnectifExportOperator(
        task_id="export_contacts", export_type="contacts", output_dir=f"{exports.OUTPUT_DIR}/contacts", **waiting
    )
    export_activities = ConnectifExportOperator(
        task_id="export_activities",
        export_type="activities",
        from_date="{{ ti.xcom_pull(task_ids='plan')['from_date'] }}",
        to_date="{{ ti.xcom_pull(task_ids='plan')['to_date'] }}",
        output_dir=f"{exports.OUTPUT_DIR}/activities",
        **waiting,
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def report(planned: dict[str, Any]) -> None:
        """Load the downloaded files into the warehouse (replacing the window) and publish the summary."""
        exports.report(get_current_context(), planned)

    unless_dry_run(planned) >> [export_contacts, export_activities] >> report(planned)
