"""The exports DAG's tasks: Airflow glue around :mod:`connectif_sync.warehouse` (the plan, loading, summary)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from connectif_dags.common import publish_summary, remove_run_dir, run_dir, run_window, setting
from connectif_provider.operators.connectif import split_date_range

#: A run's window when it has no data interval (a manual run): the week before it.
WEEK = timedelta(days=7)
#: The export tasks' download folder, from the ``plan`` task's XCom.
OUTPUT_DIR = "{{ ti.xcom_pull(task_ids='plan')['output_dir'] }}"


def plan(context: Any) -> dict[str, Any]:
    """The window and the exports it needs (Connectif takes at most 31 days per activities export)."""
    from connectif_sync.warehouse import ExportPlan

    start, end = run_window(context, WEEK)
    dry_run = bool(context["params"]["dry_run"])
    return ExportPlan(
        from_date=start.isoformat(),
        to_date=end.isoformat(),
        exports=1 + len(split_date_range(start.isoformat(), end.isoformat())),
        output_dir="" if dry_run else str(run_dir(context)),
        dry_run=dry_run,
    ).as_dict()


def report(context: Any, planned: dict[str, Any]) -> None:
    """Load the downloaded files into the warehouse (replacing the window) and publish the summary."""
    from connectif_sync.warehouse import ExportPlan, exports_summary, files_by_table, load_export_files

    ti, export = context["ti"], ExportPlan.from_dict(planned)
    loaded = None
    if not export.dry_run:
        results = [ti.xcom_pull(task_ids=task_id) for task_id in ("export_contacts", "export_activities")]
        loaded = load_export_files(setting("warehouse_url"), files_by_table(results), export.window)
    publish_summary(context, exports_summary(ti.dag_id, ti.run_id, export, loaded))
    if not export.dry_run:
        remove_run_dir(context)
