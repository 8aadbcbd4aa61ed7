"""Airflow DAG, hourly: the ERP's orders of each hour sent to Connectif as purchases (one API call each)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TriggerRule, get_current_context, task
from connectif_dags.alerting import (
    GuardrailApprovalOperator,
    dag_alerting,
    guardrail_thresholds,
    publish_if_held,
    publish_verdict,
    report_anomalies,
)
from connectif_dags.common import (
    CONN_ID,
    DEFAULT_ARGS,
    PURCHASES_POOL,
    TAGS,
    bool_setting,
    calls_estimate,
    dry_run_param,
    full_resync_param,
    mapping_for,
    new_summary,
    publish_summary,
    run_window,
    setting,
    upstream_result,
)

DOC = """
### ERP orders → Connectif purchases, hourly

Connectif has no bulk import for purchases: each paid order is one `POST /purchases/` request, so
purchases are bounded by the account's rate limit (100/min; this deployment's shared bucket allows 90/min,
about 5,400 purchases an hour, shared with every other Connectif task).

* **Data intervals.** Each run covers its hour `[data_interval_start, data_interval_end)` of order dates
  (`CronDataIntervalTimetable`), reaching back `lookback_hours` (default 24) to retry purchases kept by
  earlier runs and to catch orders that arrived late. **Backfill** a date range from the UI (*Trigger* →
  *Backfill*), `POST /api/v2/backfills` or `airflow backfill create --dag-id connectif_purchases
  --from-date ... --to-date ...`.
* **One interval at a time.** `send` runs in pool `connectif_purchases` (1 slot): however many runs a
  backfill starts (REST and CLI default to 10), one hour sends at a time, broadly oldest first, and the hourly
  scheduled run takes its turn in the same queue. Give the pool more slots to send several hours at once.
* **Idempotent and resumable.** Purchases are identified by `purchaseId`; each outcome is recorded in the
  state store right after its request, so a retried task or a re-run never sends one twice (a `409` /
  "already exists" counts as done).
* **Missing contact or product** (E0101/E0102): the contact is upserted by email, the products from the
  purchase's lines, then the purchase is sent again. A purchase that still fails (e.g. E0103, a product
  URL outside the authorised domains) is **kept** and retried by the next runs; the summary lists it.
* **Invalid orders** (bad email, negative price, missing product data...) are set aside in the rejected
  store with their reason.

**Params** — `trigger_purchase_event`: fire Connectif's purchase workflows (left empty: the Variable
`connectif_trigger_purchase_event` if set — `make demo` sets it to `false` — else on for scheduled and
manual runs and **off for backfills**, so that history does not send e-mails). `dry_run`: count what would be
sent and how long it would take at the rate limit, send nothing. `full_resync`: send the window's purchases
again even if Connectif confirmed them (duplicates are harmless). `lookback_hours`: see above.
"""

with DAG(
    dag_id="connectif_purchases",
    description="Hourly: ERP orders into Connectif purchases, one API call each",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "dry_run": dry_run_param(),
        "full_resync": full_resync_param(),
        "trigger_purchase_event": Param(
            None,
            type=["null", "boolean"],
            title="Trigger purchase event",
            description="Fire Connectif's purchase workflows. Empty: the Variable connectif_trigger_purchase_event, "
            "else on, except for backfill runs.",
        ),
        "lookback_hours": Param(
            24,
            type="integer",
            minimum=0,
            title="Look-back (hours)",
            description="Also send the window's earlier hours' purchases that are not in Connectif yet.",
        ),
    },
    tags=[*TAGS, "purchases"],
    doc_md=DOC,
    **dag_alerting("connectif_purchases", late_after=timedelta(minutes=45)),
) as dag:

    def time_window(context: Any) -> tuple[datetime, datetime, datetime]:
        """``(since, start, end)``: the run's hour, reaching back ``lookback_hours`` for kept purchases."""
        start, end = run_window(context, timedelta(hours=1))
        return start - timedelta(hours=int(context["params"]["lookback_hours"])), start, end

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def check() -> bool:
        """Guardrail: count the purchases this run would send; more than ``max_rows`` waits for approval."""
        from connectif_sync.guardrail import evaluate_count
        from connectif_sync.mappings import resolve_mapping
        from connectif_sync.purchases import plan_purchases

        context = get_current_context()
        params = context["params"]
        since, _start, end = time_window(context)
        mapping = mapping_for("purchases")
        report = plan_purchases(
            setting("source_url"), since, end, state_url=setting("state_url"), mapping=mapping,
            include_done=bool(params["full_resync"]),
        )  # fmt: skip
        thresholds = guardrail_thresholds("purchases", resolve_mapping("purchases", mapping).guardrail)
        verdict = evaluate_count("purchases", report.sent, thresholds)
        return bool(publish_verdict(context, verdict, dry_run=bool(params["dry_run"]))["hold"])

    @task(trigger_rule=TriggerRule.NONE_FAILED, pool=PURCHASES_POOL)
    def send() -> dict[str, Any]:
        """Send the window's purchases (or, in a dry run, count them); skipped when a held run is rejected."""
        from connectif_dags.purchases import fires_workflows, send_all

        from connectif_provider.hooks.connectif import ConnectifHook
        from connectif_sync.purchases import plan_purchases, purchase_payloads
        from connectif_sync.state import StateStore

        context = get_current_context()
        params = context["params"]
        since, start, end = time_window(context)
        # The param, else the deployment's Variable connectif_trigger_purchase_event (the demo: false), else on
        # except in a backfill (history must not fire workflows).
        requested = params["trigger_purchase_event"]
        if requested is None:
            requested = bool_setting("trigger_purchase_event")
        trigger = fires_workflows(requested, getattr(context["dag_run"], "run_type", None))
        common = {
            "state_url": setting("state_url"),
            "mapping": mapping_for("purchases"),
            "include_done": bool(params["full_resync"]),
        }
        window = {"from": since.isoformat(), "to": end.isoformat(), "interval_from": start.isoformat()}
        if params["dry_run"]:
            report = plan_purchases(setting("source_url"), since, end, **common)
            return {"dry_run": True, "window": window, "report": report.as_dict(), "trigger_purchase_event": trigger}
        batch = purchase_payloads(setting("source_url"), since, end, **common)
        with StateStore(setting("state_url")) as store:
            counts = send_all(batch, ConnectifHook(CONN_ID), store, trigger_event=bool(trigger))
        return {
            "dry_run": False,
            "window": window,
            "report": batch.report.as_dict(),
            "counts": counts.as_dict(),
            "trigger_purchase_event": trigger,
        }

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report() -> None:
        """Publish the run summary (also when ``send`` failed: then it says so, and fails; or was held back)."""
        from connectif_sync.contract import RunState, SyncObject

        if publish_if_held(get_current_context(), "purchases") is not None:
            return
        sent = upstream_result(get_current_context(), "purchases", "send")
        rep = sent["report"]
        counts = sent.get("counts") or {}
        notes = [f"{reason}: {n}" for reason, n in sorted(rep.get("rejected_by_reason", {}).items())]
        if counts.get("kept"):
            notes.append(f"{counts['kept']} purchases kept for the next run: {counts['kept_reasons']}")
            notes += counts.get("kept_sample", [])
        if counts.get("contacts_upserted") or counts.get("products_upserted"):
            notes.append(
                f"created first in Connectif: {counts.get('contacts_upserted', 0)} contacts (E0101), "
                f"{counts.get('products_upserted', 0)} products (E0102)"
            )
        to_send = rep.get("sent", 0)
        context = get_current_context()
        summary = new_summary(
            context,
            SyncObject.PURCHASES,
            dry_run=sent["dry_run"],
            state=RunState.PLANNED if sent["dry_run"] else RunState.SUCCESS,
            library_run_id=rep.get("run_id"),
            extracted=rep.get("extracted", 0),
            to_send=to_send,
            sent=counts.get("confirmed", 0),
            unchanged=rep.get("unchanged", 0),
            invalid=rep.get("invalid", 0),
            duplicate=rep.get("duplicate", 0),
            rejected=rep.get("invalid", 0) + rep.get("duplicate", 0),
            rejected_by_reason=dict(rep.get("rejected_by_reason") or {}),
            api_requests=counts.get("api_requests") if not sent["dry_run"] else calls_estimate(to_send),
            plan=calls_estimate(to_send) if sent["dry_run"] else None,
            notes=notes,
            extra={
                "window": sent["window"],
                "trigger_purchase_event": sent["trigger_purchase_event"],
                "extracted_lines": rep.get("extracted", 0),
                "already_in_connectif": counts.get("duplicate", 0),
                "kept": counts.get("kept", 0),
                "contacts_upserted": counts.get("contacts_upserted", 0),
                "products_upserted": counts.get("products_upserted", 0),
            },
        )
        published = publish_summary(context, summary)
        if not sent["dry_run"]:
            from connectif_provider import metrics


            metrics.rows("purchases", sent=published["sent"] + published["already_in_connectif"],
                         rejected=published["rejected"] + published["kept"])  # fmt: skip
            report_anomalies(context, published)

    approval = GuardrailApprovalOperator(verdict_task_id="check", default_timeout=timedelta(minutes=45))
    check() >> approval >> send() >> report()
