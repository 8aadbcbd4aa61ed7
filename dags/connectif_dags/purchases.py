"""The purchases DAG's tasks: Airflow glue around the library's planning and the provider's sender.

Planning, payloads and the run summary live in :mod:`connectif_sync.purchases`; sending with the
E0101/E0102 repair in :mod:`connectif_provider.operators.purchases`. Here: which settings and which window
a run uses, and how its summary is published.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param

from connectif_dags.alerting import (
    guardrail_thresholds,
    publish_if_held,
    publish_verdict,
    report_anomalies,
)
from connectif_dags.common import (
    bool_setting,
    dry_run_param,
    full_resync_param,
    mapping_for,
    publish_summary,
    rate_limit_per_minute,
    run_window,
    setting,
    upstream_result,
)
from connectif_provider import metrics
from connectif_provider.operators.purchases import fires_workflows

if TYPE_CHECKING:  # the library's purchases module loads pyarrow: imported when a task runs, not at parse time
    from connectif_sync.purchases import PurchaseBatch, PurchaseWindow

__all__ = [
    "PARAMS", "TRIGGER_TEMPLATE", "check", "fires_workflows", "report", "trigger_purchase_event", "window",
    "window_purchases",
]  # fmt: skip

#: The DAG's params (the docs of ``connectif_purchases`` say what each does).
PARAMS: dict[str, Any] = {
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
}

#: The sender's ``trigger_purchase_event``: the run's param, else the deployment's Variable
#: ``connectif_trigger_purchase_event`` (the demo: false), else empty (on, except in a backfill).
TRIGGER_TEMPLATE = "{{ connectif_trigger_purchase_event(params) }}"


def trigger_purchase_event(params: Any) -> bool | None:
    """The run's choice (a DAG macro, read when the ``send`` task renders its template)."""
    requested = params["trigger_purchase_event"]
    return bool(requested) if requested is not None else bool_setting("trigger_purchase_event")


def window(context: Any) -> PurchaseWindow:
    """The run's hour, reaching back ``lookback_hours`` for kept purchases and late orders."""
    from connectif_sync.purchases import PurchaseWindow

    start, end = run_window(context, timedelta(hours=1))
    return PurchaseWindow.looking_back(start, end, int(context["params"]["lookback_hours"]))


def window_purchases(context: Any) -> PurchaseBatch:
    """The payloads of the run's window (a dry run's batch writes nothing)."""
    from connectif_sync.purchases import PurchaseBatch

    w, params = window(context), context["params"]
    return PurchaseBatch(
        setting("source_url"),
        w.since,
        w.end,
        state_url=setting("state_url"),
        mapping=mapping_for("purchases"),
        include_done=bool(params["full_resync"]),
        dry_run=bool(params["dry_run"]),
    )


def check(context: Any) -> bool:
    """Guardrail: count the purchases this run would send; more than ``max_rows`` waits for approval."""
    from connectif_sync.guardrail import evaluate_count
    from connectif_sync.mappings import resolve_mapping
    from connectif_sync.purchases import plan_purchases

    params, w, mapping = context["params"], window(context), mapping_for("purchases")
    report = plan_purchases(
        setting("source_url"), w.since, w.end, state_url=setting("state_url"), mapping=mapping,
        include_done=bool(params["full_resync"]),
    )  # fmt: skip
    thresholds = guardrail_thresholds("purchases", resolve_mapping("purchases", mapping).guardrail)
    verdict = evaluate_count("purchases", report.sent, thresholds)
    return bool(publish_verdict(context, verdict, dry_run=bool(params["dry_run"]))["hold"])


def report(context: Any) -> None:
    """Publish the run summary (also when ``send`` failed: then it says so, and fails; or was held back)."""
    from connectif_sync.purchases import purchases_summary

    if publish_if_held(context, "purchases") is not None:
        return
    sent = upstream_result(context, "purchases", "send")
    ti = context["ti"]
    published = publish_summary(context, purchases_summary(
        ti.dag_id, ti.run_id, sent, window(context), per_minute=rate_limit_per_minute()
    ))
    if not sent["dry_run"]:
        metrics.rows("purchases", sent=published["sent"] + published["already_in_connectif"],
                     rejected=published["rejected"] + published["kept"])  # fmt: skip
        report_anomalies(context, published)
