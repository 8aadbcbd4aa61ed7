"""The shape of a bulk sync DAG (contacts, products): extract -> one import per file -> confirm and report.

``extract`` runs the sync library (extract, shape, validate, detect changes, chunk) and writes the chunk
files of new and changed rows; ``import_file`` is one deferrable ``ConnectifImportOperator`` per file
(dynamic task mapping, pool ``connectif_imports``); ``report`` commits to the state store exactly the rows
Connectif confirmed (an import's error report keeps its rows pending, so they go again next run),
publishes the run summary and, when every import succeeded, the object's Asset.
"""

from __future__ import annotations

from airflow.sdk import DAG, Asset, CronTriggerTimetable, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from connectif_dags.common import (
    CONN_ID,
    DEFAULT_ARGS,
    IMPORTS_POOL,
    POLL_INTERVAL,
    TAGS,
    asset_extra,
    dry_run_param,
    full_resync_param,
    import_summaries,
    log,
    mapping_for,
    new_summary,
    publish_summary,
    remove_run_dir,
    run_dir,
    setting,
)
from connectif_provider.operators.connectif import ConnectifImportOperator
from connectif_sync.contract import ImportOutcome, RunState, RunSummary, SyncObject


def bulk_sync_dag(obj: str, *, schedule: str, doc_md: str, description: str) -> DAG:
    """Build ``connectif_<obj>``; the DAG file only declares what differs (object, schedule, docs)."""
    asset = Asset(f"connectif://{obj}", extra={"object": obj})
    with DAG(
        dag_id=f"connectif_{obj}",
        description=description,
        schedule=CronTriggerTimetable(schedule, timezone="UTC"),
        catchup=False,
        max_active_runs=1,
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
        def report(files: list[str]) -> None:
            """Commit what Connectif confirmed, publish the summary; fail if an import did not finish."""
            from connectif_sync.state import StateStore

            context = get_current_context()
            ti = context["ti"]
            extracted = ti.xcom_pull(task_ids="extract", key="report")
            rep, deleted_keys, dry_run = extracted["report"], extracted["deleted_keys"], extracted["dry_run"]
            results = import_summaries(ti, "import_file", len(files))
            summary = new_summary(
                context,
                SyncObject(obj),
                dry_run=dry_run,
                mode=rep.get("mode"),
                library_run_id=rep.get("run_id"),
                api_requests=rep.get("api_requests"),
                plan=rep.get("api_requests") if dry_run else None,
                rejected_by_reason=dict(rep.get("rejected_by_reason") or {}),
                **{k: int(rep.get(k) or 0) for k in ("extracted", "new", "changed", "unchanged", "deleted")},
                **{k: int(rep.get(k) or 0) for k in ("invalid", "duplicate", "suppressed", "files", "bytes")},
                to_send=int(rep.get("sent") or 0),
            )
            if not dry_run:
                with StateStore(setting("state_url")) as store:
                    for s in results:
                        outcome = store.confirm_import(s)
                        summary.sent += outcome["confirmed"]
                        summary.rejected_by_connectif += outcome["failed"]
                        summary.add_import(ImportOutcome.from_operator(s))
                        for row in s.get("rejected_rows") or []:
                            reason = f"Connectif: {row.get('field') or ''} {row.get('error') or ''}".strip()
                            summary.rejected_by_reason[reason] = summary.rejected_by_reason.get(reason, 0) + 1
                spent = [i.get("api_requests") for i in results]
                if len(results) == len(files) and all(isinstance(n, int) for n in spent):
                    summary.api_requests = sum(int(n) for n in spent if n is not None)
            summary.rejected = (
                summary.invalid + summary.duplicate + int(rep.get("oversize") or 0) + summary.suppressed
                + summary.rejected_by_connectif
            )  # fmt: skip
            unfinished = len(files) - len(results)
            summary.notes = [f"{reason}: {n}" for reason, n in sorted(summary.rejected_by_reason.items())]
            if summary.deleted:
                summary.notes.append(
                    f"{summary.deleted} keys confirmed earlier are gone from the source, e.g. {deleted_keys[:5]}"
                )
            if unfinished:
                summary.state = RunState.INCOMPLETE
                summary.notes.append(
                    f"{unfinished} of {len(files)} imports did not finish; their rows go again next run"
                )
            elif dry_run:
                summary.state = RunState.PLANNED
            publish_summary(context, summary)
            if unfinished:
                raise AirflowFailException(
                    f"{unfinished} of {len(files)} {obj} imports did not finish (see the failed import_file "
                    "tasks); confirmed rows are committed, the others will be sent again by the next run"
                )
            if not dry_run:
                remove_run_dir(context)

        @task(outlets=[asset])
        def publish() -> None:
            """Announce the Asset with the run's counts as its event's ``extra``; a dry run changed nothing."""
            context = get_current_context()
            data = context["ti"].xcom_pull(task_ids="report", key="summary") or {}
            if data.get("dry_run"):
                raise AirflowSkipException("dry run: Connectif was not changed, no Asset event")
            context["outlet_events"][asset].extra = asset_extra(RunSummary.from_dict(data))

        reported = report(extracted)
        imports >> reported
        reported >> publish()
    return dag
