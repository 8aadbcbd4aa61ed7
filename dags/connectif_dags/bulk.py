"""The shape of a bulk sync DAG (contacts, products): extract -> one import per file -> confirm and report.

``extract`` runs the sync library (extract, shape, validate, detect changes, chunk) and writes the chunk
files of new and changed rows; ``import_file`` is one deferrable ``ConnectifImportOperator`` per file
(dynamic task mapping, pool ``connectif_imports``); ``report`` commits to the state store exactly the rows
Connectif confirmed (an import's error report keeps its rows pending, so they go again next run),
publishes the run summary and, when every import succeeded, the object's Asset.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, CronTriggerTimetable, TriggerRule, get_current_context, task
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
    upload_ledger,
)
from connectif_provider import metrics
from connectif_provider.operators.connectif import ConnectifImportOperator
from connectif_sync.contract import ImportOutcome, RunState, RunSummary, SyncObject


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
        schedule=CronTriggerTimetable(schedule, timezone="UTC"),
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
            """Extract, shape, validate, detect changes and chunk; returns the files to import.

            Rejected rows go to the rejected store; the library's report is pushed as XCom ``report``, the
            guardrail's verdict on the plan as XCom ``guardrail`` (a dry run reports the rules that would fire).
            """
            from connectif_sync.guardrail import evaluate
            from connectif_sync.mappings import resolve_mapping
            from connectif_sync.pipeline import run_sync
            from connectif_sync.state import StateStore

            context = get_current_context()
            ti = context["ti"]
            params = context["params"]
            dry_run = bool(params["dry_run"])
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
            with StateStore(setting("state_url"), readonly=True) as store:
                verdict = evaluate(
                    obj,
                    result.report.as_dict(),
                    store=store,
                    thresholds=thresholds,
                    changes=result.changes,
                    deleted_keys=result.deleted_keys,
                    confirmed=confirmed_before,
                )
            publish_verdict(context, verdict, dry_run=dry_run)
            return [] if dry_run else [f.path for f in result.files]  # a dry run's files are only planned

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
        def report() -> Any:
            """Commit what Connectif confirmed, publish the summary (always, even when a task before failed);
            fail if an import did not finish or could not be confirmed."""
            from connectif_sync.import_rejects import reason_label, record_import_rejects, with_keys
            from connectif_sync.state import StateStore

            context = get_current_context()
            ti = context["ti"]
            extracted = ti.xcom_pull(task_ids="extract", key="report")
            files = ti.xcom_pull(task_ids="extract")
            if not isinstance(extracted, dict) or files is None:  # extract failed: nothing was sent
                failed = new_summary(
                    context,
                    SyncObject(obj),
                    state=RunState.FAILED,
                    notes=["extract failed: nothing was sent; its log says why (the run's rows go next run)"],
                    extra={"failed": "extract"},
                )
                publish_summary(context, failed)
                raise AirflowFailException(f"{obj}: extract failed, nothing was sent (see the extract task's log)")
            rep, deleted_keys, dry_run = extracted["report"], extracted["deleted_keys"], extracted["dry_run"]
            verdict = ti.xcom_pull(task_ids="extract", key="guardrail") or {}
            decision = approval_decision(ti)
            held_back = decision is not None and decision != "approved"
            if held_back:
                files = []  # nothing was released to Connectif
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
            unconfirmed_rows = 0
            unconfirmed: list[str] = []
            if not dry_run:
                with StateStore(setting("state_url")) as store:
                    for s in results:
                        s = with_keys(s)  # the key of each line Connectif rejected, while the chunk files exist
                        outcome = store.confirm_import(s)
                        summary.sent += outcome["confirmed"]
                        summary.rejected_by_connectif += outcome["failed"]
                        summary.add_import(ImportOutcome.from_operator(s))
                        if outcome.get("unconfirmed"):
                            unconfirmed_rows += outcome["unconfirmed"]
                            unconfirmed.append(outcome["reason"])
                            continue
                        record_import_rejects(store, SyncObject(obj).store_object, rep.get("run_id"), s)
                        for row in s.get("rejected_rows") or []:
                            reason = reason_label(row.get("field"), row.get("error"))
                            summary.rejected_by_reason[reason] = summary.rejected_by_reason.get(reason, 0) + 1
                spent = [i.get("api_requests") for i in results]
                if results and len(results) == len(files) and all(isinstance(n, int) for n in spent):
                    summary.api_requests = sum(int(n) for n in spent if n is not None)
            summary.rejected = (
                summary.invalid + summary.duplicate + int(rep.get("oversize") or 0) + summary.suppressed
                + summary.rejected_by_connectif
            )  # fmt: skip
            unfinished = len(files) - len(results)
            summary.notes = [f"{reason}: {n}" for reason, n in sorted(summary.rejected_by_reason.items())]
            summary.notes += [f"not confirmed, sent again next run: {why}" for why in unconfirmed]
            if summary.deleted:
                summary.notes.append(
                    f"{summary.deleted} keys confirmed earlier are gone from the source, e.g. {deleted_keys[:5]}"
                )
            if unfinished:
                summary.notes.append(
                    f"{unfinished} of {len(files)} imports did not finish; their rows go again next run"
                )
            if verdict.get("fired"):
                verb = "would hold" if dry_run else "held"
                summary.notes.append(f"guardrail {verb} the run: {', '.join(verdict['fired'])}")
            if held_back:
                summary.notes.append(f"upload {decision}: nothing was sent")
            if unfinished or unconfirmed:
                summary.state = RunState.INCOMPLETE
            elif dry_run:
                summary.state = RunState.PLANNED
            summary.extra.update(
                {
                    "unconfirmed": unconfirmed_rows,
                    "import_errors": unfinished,
                    "guardrail": {
                        "fired": verdict.get("fired", []),
                        "held": bool(verdict.get("hold")),
                        "would_hold": bool(verdict.get("would_hold")),
                        "decision": decision,
                    },
                }
            )
            published = publish_summary(context, summary)
            if not dry_run and not held_back:
                metrics.rows(obj, sent=summary.sent, rejected=summary.rejected)
                notes_sent = report_anomalies(context, published)
                if notes_sent:
                    log.info("alerts: %s", notes_sent)
            if unfinished:
                raise AirflowFailException(
                    f"{unfinished} of {len(files)} {obj} imports did not finish (see the failed import_file "
                    "tasks); confirmed rows are committed, the others will be sent again by the next run"
                )
            if unconfirmed:
                raise AirflowFailException(
                    f"{len(unconfirmed)} {obj} imports finished without an answer that proves which rows Connectif "
                    f"took ({unconfirmed[0]}); their {unconfirmed_rows} rows stay pending and go again next run"
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
            decision = (data.get("guardrail") or {}).get("decision")
            if decision not in (None, "approved"):
                raise AirflowSkipException(f"upload {decision}: Connectif was not changed, no Asset event")
            context["outlet_events"][asset].extra = asset_extra(RunSummary.from_dict(data))

        reported = report()
        [extracted, imports] >> reported
        reported >> publish()
    return dag
