"""The tasks of ``connectif_coupons``, as Airflow sees them: read the context, call the library
(:mod:`connectif_sync.coupons` plans and confirms a refill, :mod:`connectif_sync.guardrail` judges it),
push and publish. The DAG file only declares."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from connectif_dags.alerting import (
    approval_decision,
    guardrail_thresholds,
    publish_verdict,
    report_anomalies,
)
from connectif_dags.common import (
    CONN_ID,
    import_summaries,
    log,
    mapping_for,
    new_summary,
    publish_summary,
    remove_run_dir,
    run_dir,
    setting,
)
from connectif_provider import metrics
from connectif_provider.exceptions import ConnectifNotFoundError
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_sync.contract import RunState, SyncObject
from connectif_sync.coupons import RefillPlan, confirm_refill, plan_refill
from connectif_sync.guardrail import evaluate_refill
from connectif_sync.mappings import resolve_mapping
from connectif_sync.store import StateStore

PLAN_KEY = "plan"  # XCom key of the refill plan (RefillPlan.as_dict)


def workflow_status(hook: ConnectifHook) -> Any:
    """A workflow's status by id (None when it no longer exists), each asked once per run."""
    statuses: dict[str, str | None] = {}

    def status(workflow_id: str) -> str | None:
        if workflow_id not in statuses:
            try:
                statuses[workflow_id] = str(hook.get_workflow(workflow_id).get("status"))
            except ConnectifNotFoundError:
                statuses[workflow_id] = None
        return statuses[workflow_id]

    return status


def plan(context: Any) -> list[dict[str, Any]]:
    """Plan the refill, push it (XCom ``plan``) and the guardrail's verdict; returns one import's arguments
    per file (none in a dry run)."""
    ti, params = context["ti"], context["params"]
    dry_run = bool(params["dry_run"])
    hook = ConnectifHook(CONN_ID)
    mapping = resolve_mapping("coupons", mapping_for("coupons"))
    thresholds = guardrail_thresholds("coupons", mapping.guardrail)
    refill = plan_refill(
        hook.list_coupon_sets(),
        workflow_status(hook),
        source_url=setting("source_url"),
        state_url=setting("state_url"),
        mapping=mapping,
        threshold=int(params["threshold"]),
        refill_to=int(params["refill_to"]),
        out_dir=None if dry_run else run_dir(context),
        dry_run=dry_run,
        run_id=f"{ti.dag_id}/{ti.run_id}/{ti.try_number}",
    )
    ti.xcom_push(key=PLAN_KEY, value=refill.as_dict())
    with StateStore(setting("state_url"), readonly=True) as store:
        verdict = evaluate_refill(refill.report, refill.to_send, store=store, thresholds=thresholds)
    publish_verdict(context, verdict, dry_run=dry_run)
    return [f.import_kwargs() for f in refill.files]


def report(context: Any) -> None:
    """Mark the codes Connectif confirmed as used in the ERP, publish the summary and the alerts; fail when
    an import did not finish or could not be confirmed (its codes stay unused and go next run)."""
    ti = context["ti"]
    files, info = ti.xcom_pull(task_ids="plan"), ti.xcom_pull(task_ids="plan", key=PLAN_KEY)
    if not isinstance(info, dict) or files is None:  # plan failed: nothing was sent
        note = "plan failed: nothing was sent; its log says why"
        publish_summary(
            context,
            new_summary(context, SyncObject.COUPONS, state=RunState.FAILED, notes=[note], extra={"failed": "plan"}),
        )
        raise AirflowFailException("coupons: plan failed, nothing was sent (see the plan task's log)")
    refill = RefillPlan.from_dict(info)
    decision = approval_decision(ti)
    held = decision if decision not in (None, "approved") else None
    results = import_summaries(ti, "import_codes", 0 if held else len(files))
    outcome = confirm_refill(
        refill,
        results,
        source_url=setting("source_url"),
        state_url=setting("state_url"),
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        held=held,
    )
    summary = outcome.summary
    verdict = ti.xcom_pull(task_ids="plan", key="guardrail") or {}
    if verdict.get("fired"):
        summary.notes.append(
            f"guardrail {'would hold' if refill.dry_run else 'held'} the run: {', '.join(verdict['fired'])}"
        )
    summary.extra["guardrail"] = {
        "fired": verdict.get("fired", []),
        "held": bool(verdict.get("hold")),
        "would_hold": bool(verdict.get("would_hold")),
        "decision": decision,
    }
    published = publish_summary(context, summary)
    if not refill.dry_run and not held:
        metrics.rows("coupons", sent=summary.sent, rejected=summary.rejected)
        sent = report_anomalies(context, published)
        if sent:
            log.info("alerts: %s", sent)
    if outcome.failure:
        raise AirflowFailException(outcome.failure)
    if not refill.dry_run:
        remove_run_dir(context)
