"""The shape of a bulk sync DAG (contacts, products): extract -> one import per file -> confirm and report.

``extract`` runs the sync library (extract, shape, validate, detect changes, chunk) and writes the chunk
files of new and changed rows; ``import_file`` is one deferrable ``ConnectifImportOperator`` per file
(dynamic task mapping, pool ``connectif_imports``); ``report`` commits to the state store exactly the rows
Connectif confirmed (an import's error report keeps its rows pending, so they go again next run),
publishes the run summary and, when every import succeeded, the object's Asset.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Asset, CronTriggerTimetable, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from connectif_dags.common import (
    CONN_ID,
    CURRENT_STATE_RUN_TYPES,
    DEFAULT_ARGS,
    IMPORTS_POOL,
    POLL_INTERVAL,
    TAGS,
    dry_run_param,
    full_resync_param,
    import_summaries,
    log,
    mapping_for,
    publish_summary,
    remove_run_dir,
    run_dir,
    setting,
)
from connectif_provider.operators.connectif import ConnectifImportOperator


def bulk_sync_dag(obj: str, *, schedule: str, doc_md: str, description: str) -> DAG:
    """Build ``connectif_<obj>``; the DAG file only declares what differs (object, schedule, docs)."""
    asset = Asset(f"connectif://{obj}", extra={"object": obj})
    with DAG(
        dag_id=f"connectif_{obj}",
        description=description,
        schedule=CronTriggerTimetable(schedule, timezone="UTC"),
        catchup=False,
        max_active_runs=1,
        allowed_run_types=CURRENT_STATE_RUN_TYPES,  # a backfill would only repeat today's sync
        default_args=DEFAULT_ARGS,
        params={"dry_run": dry_run_param(), "full_resync": full_resync_param()},
        tags=[*TAGS, obj],
        doc_md=doc_md,
    ) as dag:

        @task
        def extract() -> list[str]:
            """Extract, shape, validate, detect changes and chunk; returns the files to import.

            Rejected rows go to the rejected store; the library's report is pushed as XCom ``report``.
            """
            from connectif_sync.pipeline import run_sync

            context = get_current_context()
            ti = context["ti"]
            params = context["params"]
            dry_run = bool(params["dry_run"])
            result = run_sync(
                obj,
                setting("source_url"),
                None if dry_run else run_dir(context),
                state_url=setting("state_url"),
                mapping=mapping_for(obj),
                full_resync=bool(params["full_resync"]),
                dry_run=dry_run,
                run_id=f"{ti.dag_id}/{ti.run_id}/{ti.try_number}",
            )
            for r in result.rejected[:20]:
                log.warning("rejected %s (%s) %s: %s", r["key"], r["source_ref"], r["field"], r["reason"])
            ti.xcom_push(
                key="report",
                value={"report": result.report.as_dict(), "deleted_keys": result.deleted_keys[:20], "dry_run": dry_run},
            )
            return [] if dry_run else [f.path for f in result.files]  # a dry run's files are only planned

        extracted = extract()
        imports = ConnectifImportOperator.partial(
            task_id="import_file",
            import_type=obj,
            override_existing=True,  # changed rows must overwrite what Connectif holds
            connectif_conn_id=CONN_ID,
            poll_interval=POLL_INTERVAL,
            pool=IMPORTS_POOL,
        ).expand(file_path=extracted)

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report(files: list[str]) -> Any:
            """Commit what Connectif confirmed, publish the summary; fail if an import did not finish."""
            from connectif_sync.state import StateStore

            context = get_current_context()
            ti = context["ti"]
            extracted = ti.xcom_pull(task_ids="extract", key="report")
            extract_report, deleted_keys, dry_run = extracted["report"], extracted["deleted_keys"], extracted["dry_run"]
            summaries = import_summaries(ti, "import_file", len(files))
            confirmed = failed_rows = 0
            rejected_reasons: dict[str, int] = {}
            if not dry_run:
                with StateStore(setting("state_url")) as store:
                    for s in summaries:
                        outcome = store.confirm_import(s)
                        confirmed += outcome["confirmed"]
                        failed_rows += outcome["failed"]
                        for row in s.get("rejected_rows") or []:
                            reason = f"Connectif: {row.get('field') or ''} {row.get('error') or ''}".strip()
                            rejected_reasons[reason] = rejected_reasons.get(reason, 0) + 1
            rep = extract_report
            unfinished = len(files) - len(summaries)
            notes = [f"{reason}: {n}" for reason, n in sorted(rep.get("rejected_by_reason", {}).items())]
            notes += [f"{reason}: {n}" for reason, n in sorted(rejected_reasons.items())]
            if rep.get("deleted"):
                notes.append(
                    f"{rep['deleted']} keys confirmed earlier are gone from the source, e.g. {deleted_keys[:5]}"
                )
            if unfinished:
                notes.append(f"{unfinished} of {len(files)} imports did not finish; their rows go again next run")
            summary = publish_summary(
                context,
                {
                    "object": obj,
                    "dry_run": dry_run,
                    "mode": rep.get("mode"),
                    "extracted": rep.get("extracted", 0),
                    "new": rep.get("new", 0),
                    "changed": rep.get("changed", 0),
                    "unchanged": rep.get("unchanged", 0),
                    "deleted": rep.get("deleted", 0),
                    "invalid": rep.get("invalid", 0),
                    "duplicate": rep.get("duplicate", 0),
                    "suppressed": rep.get("suppressed", 0),
                    "files": rep.get("files", 0),
                    "bytes": rep.get("bytes", 0),
                    "to_send": rep.get("sent", 0),
                    "sent": confirmed,
                    "rejected": rep.get("invalid", 0)
                    + rep.get("duplicate", 0)
                    + rep.get("oversize", 0)
                    + rep.get("suppressed", 0)
                    + failed_rows,
                    "rejected_by_connectif": failed_rows,
                    "imports": len(summaries),
                    "api_requests": rep.get("api_requests"),
                    "notes": notes,
                },
            )
            if unfinished:
                raise AirflowFailException(
                    f"{unfinished} of {len(files)} {obj} imports did not finish (see the failed import_file "
                    "tasks); confirmed rows are committed, the others will be sent again by the next run"
                )
            if not dry_run:
                remove_run_dir(context)
            return summary

        @task(outlets=[asset])
        def publish(summary: dict[str, Any]) -> None:
            """Announce the Asset (downstream DAGs may be scheduled on it); a dry run changed nothing."""
            if summary.get("dry_run"):
                raise AirflowSkipException("dry run: Connectif was not changed, no Asset event")

        reported = report(extracted)
        imports >> reported
        publish(reported)
    return dag
