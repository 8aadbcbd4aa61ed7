"""The erasure DAG's tasks: Airflow glue around :mod:`connectif_sync.erasure` (planning, erasing, summary)."""

from __future__ import annotations

from typing import Any

from connectif_dags.alerting import guardrail_thresholds, publish_if_held, publish_verdict
from connectif_dags.common import CONN_ID, publish_summary, rate_limit_per_minute, setting, upstream_result
from connectif_provider import metrics
from connectif_provider.hooks.connectif import ConnectifHook


def check(context: Any) -> bool:
    """Guardrail: deleting contacts cannot be undone; more than ``max_rows`` pending requests wait for
    approval (default 100; Variable ``connectif_guardrail``, entry ``erasure``)."""
    import sqlalchemy as sa

    from connectif_sync.erasure import pending_erasures
    from connectif_sync.guardrail import evaluate_count

    engine = sa.create_engine(setting("source_url"))
    try:
        pending = pending_erasures(engine)
    finally:
        engine.dispose()
    verdict = evaluate_count("erasure", len(pending), guardrail_thresholds("erasure"), [r.email for r in pending])
    return bool(publish_verdict(context, verdict, dry_run=bool(context["params"]["dry_run"]))["hold"])


def erase(context: Any) -> dict[str, Any]:
    """Delete each pending request's contact and record it done at once (or, in a dry run, count)."""
    import sqlalchemy as sa

    from connectif_sync.erasure import ErasureResult, pending_erasures, plan_erasures, run_erasures
    from connectif_sync.store import StateStore

    ti = context["ti"]
    engine = sa.create_engine(setting("source_url"))
    try:
        plan = plan_erasures(pending_erasures(engine))
        if context["params"]["dry_run"]:
            return ErasureResult.planned(plan).as_dict()
        with StateStore(setting("state_url")) as store:
            result = run_erasures(
                plan, ConnectifHook(CONN_ID).delete_contact, store, engine,
                attempt=f"{ti.dag_id}/{ti.run_id}/{ti.try_number}", run=f"{ti.dag_id}/{ti.run_id}",
            )  # fmt: skip
        return result.as_dict()
    finally:
        engine.dispose()


def report(context: Any) -> None:
    """Publish the run summary (also when ``erase`` failed: then it says so, and fails; or was held back)."""
    from connectif_sync.erasure import ErasureResult, erasure_summary

    if publish_if_held(context, "contact_erasure") is not None:
        return
    result = ErasureResult.from_dict(upstream_result(context, "contact_erasure", "erase"))
    summary = erasure_summary(
        context["ti"].dag_id, context["ti"].run_id, result, per_minute=rate_limit_per_minute()
    )
    publish_summary(context, summary)
    if not result.dry_run:
        metrics.rows("erasure", sent=summary.sent, rejected=summary.rejected)
