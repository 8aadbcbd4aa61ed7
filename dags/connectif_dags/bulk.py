"""The shape of a bulk sync DAG (contacts, products): extract -> one import per file -> confirm and report.

``extract`` runs the sync library (extract, shape, validate, detect changes, chunk) and writes the chunk
files of new and changed rows; ``import_file`` is one deferrable ``ConnectifImportOperator`` per file
(dynamic task mapping, pool ``connectif_imports``); ``report`` commits to the state store exactly the rows
Connectif confirmed (an import's error report keeps its rows pending, so they go again next run),
publishes the run summary and, when every import succeeded, the object's Asset.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from connectif_dags.alerting import (
    GuardrailApprovalOperator,
    approval_decision,
    dag_alerting,
    guardrail_thresholds,
    publish_verdict,
    report_anomalies,
)
from connectif_dags.common import (
    CONN_ID,
    CURRENT_STATE_RUN_TYPES,
    DEFAULT_ARGS,
    IMPORTS_POOL,
    POLL_INTERVAL,
    TAGS,
    asset_extra,
    cron_schedule,
    dry_run_param,
    full_resync_param,
    import_summaries,
    log,
    mapping_for,
    new_summary,
    publish_summary,
    rate_limit_per_minute,
    remove_run_dir,
    run_dir,
    setting,
    upload_ledger,
)
from connectif_provider import metrics
from connectif_provider.operators.connectif import ConnectifImportOperator
from connectif_sync.contract import RunState, RunSummary, SyncObject


def extract_files(context: Any, obj: str) -> list[str]:
    """Extract, shape, validate, detect changes and chunk; returns the files to import.

    Rejected rows go to the rejected store; the library's report is pushed as XCom ``report``, the
    guardrail's verdict on the plan as XCom ``guardrail`` (a dry run reports the rules that would fire).
    """
    from connectif_sync.guardrail import evaluate
    from connectif_sync.mappings import resolve_mapping
    from connectif_sync.pipeline import run_sync
    from connectif_sync.store import StateStore

    ti, dry_run = context["ti"], bool(context["params"]["dry_run"])
    mapping = resolve_mapping(obj, mapping_for(obj))
    thresholds = guardrail_thresholds(obj, mapping.guardrail)
    with StateStore(setting("state_url"), readonly=True) as store:
        confirmed_before = store.count(obj)  # the run's plan is compared with this state
    result = run_sync(
        obj,
        setting("source_url"),
        None if dry_run else run_dir(context),
        state_url=setting("state_url"),
        mapping=mapping,
        full_resync=bool(context["params"]["full_resync"]),
        dry_run=dry_run,
        run_id=f"{ti.dag_id}/{ti.run_id}/{ti.try_number}",
        requests_per_minute=rate_limit_per_minute(),
    )
    for r in result.rejected[:20]:
        log.warning("rejected %s (%s) %s: %s", r["key"], r["source_ref"], r["field"], r["reason"])
    report = result.report.as_dict()
    ti.xcom_push(key="report", value={"report": report, "deleted_keys": result.deleted_keys[:20], "dry_run": dry_run})
    with StateStore(setting("state_url"), readonly=True) as store:
        verdict = evaluate(
            obj,
            report,
            store=store,
            thresholds=thresholds,
            changes=result.changes,
            deleted_keys=result.deleted_keys,
            confirmed=confirmed_before,
        )
    publish_verdict(context, verdict, dry_run=dry_run)
    return [] if dry_run else [f.path for f in result.files]  # a dry run's files are only planned


def report_run(context: Any, obj: str) -> None:
    """Commit what Connectif confirmed, publish the summary (always, even when a task before failed); fail
    if an import did not finish or could not be confirmed."""
    from connectif_sync.bulk import bulk_run_end, planned_summary
    from connectif_sync.store import StateStore

    ti = context["ti"]
    extracted = ti.xcom_pull(task_ids="extract", key="report")
    files = ti.xcom_pull(task_ids="extract")
    if not isinstance(extracted, dict) or files is None:  # extract failed: nothing was sent
        note = "extract failed: nothing was sent; its log says why (the run's rows go next run)"
        publish_summary(
            context,
            new_summary(context, SyncObject(obj), state=RunState.FAILED, notes=[note], extra={"failed": "extract"}),
        )
        raise AirflowFailException(f"{obj}: extract failed, nothing was sent (see the extract task's log)")
    rep, dry_run = extracted["report"], bool(extracted["dry_run"])
    decision = approval_decision(ti)
    held_back = decision is not None and decision != "approved"
    started = 0 if held_back else len(files)  # nothing was released to Connectif when held back
    summary = planned_summary(ti.dag_id, ti.run_id, SyncObject(obj), rep, dry_run=dry_run)
    with nullcontext(None) if dry_run else StateStore(setting("state_url")) as store:  # a dry run commits nothing
        end = bulk_run_end(
            summary,
            report=rep,
            deleted_keys=extracted["deleted_keys"],
            files=started,
            results=import_summaries(ti, "import_file", started),
            verdict=ti.xcom_pull(task_ids="extract", key="guardrail") or {},
            decision=decision,
            store=store,
        )
    published = publish_summary(context, summary)
    if not dry_run and not held_back:
        metrics.rows(obj, sent=summary.sent, rejected=summary.rejected)
        alerted = report_anomalies(context, published)
        if alerted:
            log.info("alerts: %s", alerted)
    failure = end.failure(obj)
    if failure:
        raise AirflowFailException(failure)
    if not dry_run:
        remove_run_dir(context)


def publish_asset(context: Any, asset: Asset) -> None:
    """Announce the Asset with the run's counts as its event's ``extra``; a dry run changed nothing."""
    data = context["ti"].xcom_pull(task_ids="report", key="summary") or {}
    if data.get("dry_run"):
        raise AirflowSkipException("dry run: Connectif was not changed, no Asset event")
    decision = (data.get("guardrail") or {}).get("decision")
    if decision not in (None, "approved"):
        raise AirflowSkipException(f"upload {decision}: Connectif was not changed, no Asset event")
    context["outlet_events"][asset].extra = asset_extra(RunSummary.from_dict(data))


def bulk_sync_dag(
    obj: str,
    *,
    schedule: str,
    doc_md: str,
    description: str,
    late_after: timedelta = timedelta(hours=2),
    approval_timeout: timedelta = timedelta(hours=12),
) -> DAG:
    """Build ``connectif_<obj>``; the DAG file only declares what differs (object, schedule, docs).

    ``late_after``: the run's deadline after it was queued (a Deadline Alert); ``approval_timeout``: how long
    a held upload waits for a person before it is rejected (shorter than the schedule).
    """
    asset = Asset(f"connectif://{obj}", extra={"object": obj})
    with DAG(
        dag_id=f"connectif_{obj}",
        description=description,
        schedule=cron_schedule(schedule),
        catchup=False,
        max_active_runs=1,
        allowed_run_types=CURRENT_STATE_RUN_TYPES,  # a backfill would only repeat today's sync
        default_args=DEFAULT_ARGS,
        params={"dry_run": dry_run_param(), "full_resync": full_resync_param()},
        tags=[*TAGS, obj],
        doc_md=doc_md,
        **dag_alerting(f"connectif_{obj}", late_after=late_after),
    ) as dag:

        @task
        def extract() -> list[str]:
            """Extract, shape, validate, detect changes and chunk; returns the files to import."""
            return extract_files(get_current_context(), obj)

        extracted = extract()
        approval = GuardrailApprovalOperator(verdict_task_id="extract", default_timeout=approval_timeout)

        @task(trigger_rule=TriggerRule.NONE_FAILED)
        def release(files: list[str]) -> list[str]:
            """The files to import: all of them when the guardrail did not hold the run or a person approved.

            A rejected (or timed out) approval skips this task, so nothing is imported.
            """
            return files

        released = release(extracted)
        extracted >> approval >> released
        imports = ConnectifImportOperator.partial(
            task_id="import_file",
            import_type=obj,
            override_existing=True,  # changed rows must overwrite what Connectif holds
            connectif_conn_id=CONN_ID,
            poll_interval=POLL_INTERVAL,
            pool=IMPORTS_POOL,
            upload_ledger=upload_ledger,  # a later run re-attaches to an earlier run's unconfirmed import
        ).expand(file_path=released)

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report() -> None:
            """Commit what Connectif confirmed and publish the summary (always); fail if an import did not
            finish or could not be confirmed."""
            report_run(get_current_context(), obj)

        @task(outlets=[asset])
        def publish() -> None:
            """Announce the Asset with the run's counts as its event's ``extra``; a dry run changed nothing."""
            publish_asset(get_current_context(), asset)

        reported = report()
        [extracted, imports] >> reported
        reported >> publish()
    return dag
