"""Airflow DAG, every 30 minutes: refill Connectif coupon sets that run low with unused codes from the ERP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task
from connectif_dags import coupons
from connectif_dags.alerting import GuardrailApprovalOperator, dag_alerting
from connectif_dags.common import (
    CONN_ID,
    CURRENT_STATE_RUN_TYPES,
    DEFAULT_ARGS,
    IMPORTS_POOL,
    POLL_INTERVAL,
    TAGS,
    cron_schedule,
    dry_run_param,
    upload_ledger,
)

from connectif_provider.operators.connectif import ConnectifImportOperator

DOC = """
### ERP coupon pool → Connectif coupon sets, every 30 minutes

1. **plan** picks the `multiple` sets of **active** workflows with fewer than `threshold` codes, takes the ERP
   pool's oldest unused codes (sample ERP: `coupon_pool`) up to `refill_to`, validates them (refused codes go
   to the rejected store, never picked again), writes one CSV per set. The **guardrail** holds a refill of
   over 5,000 codes, or whose refused share jumps, in **approve_upload** (*Required actions*).
2. **import_codes** — one Connectif coupons import per set (`couponSetId`), deferred, pool `connectif_imports`.
3. **report** marks the codes **used in the ERP only once Connectif confirmed them**; codes in an import's
   error report stay unused. Alerts: failures, a pool too short to refill a set, imports in error.

**Params** — `threshold` (100), `refill_to` (500), `dry_run`. **No backfills**: trigger a run instead."""

with DAG(
    dag_id="connectif_coupons",
    description="Every 30 min: refill low Connectif coupon sets from the ERP's coupon pool",
    schedule=cron_schedule("*/30 * * * *"),
    catchup=False,
    max_active_runs=1,
    allowed_run_types=CURRENT_STATE_RUN_TYPES,  # a backfill would only repeat today's work
    default_args=DEFAULT_ARGS,
    params={
        "dry_run": dry_run_param(),
        "threshold": Param(100, type="integer", minimum=0, description="Refill a set below this many codes."),
        "refill_to": Param(500, type="integer", minimum=1, description="Available codes a refilled set gets."),
    },
    tags=[*TAGS, "coupons"],
    doc_md=DOC,
    **dag_alerting("connectif_coupons", late_after=timedelta(minutes=25)),
) as dag:

    @task
    def plan() -> list[dict[str, Any]]:
        """Choose the sets, take and validate their codes, write one file per set; the guardrail judges."""
        return coupons.plan(get_current_context())

    @task(trigger_rule=TriggerRule.NONE_FAILED)  # runs when the approval skipped (normal) or approved
    def release(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The imports to run: skipped (nothing imported) when a held refill is rejected or times out."""
        return files

    planned = plan()
    approval = GuardrailApprovalOperator(verdict_task_id="plan", default_timeout=timedelta(minutes=25))
    released = release(planned)
    imports = ConnectifImportOperator.partial(
        task_id="import_codes", import_type="coupons", connectif_conn_id=CONN_ID, poll_interval=POLL_INTERVAL,
        pool=IMPORTS_POOL, upload_ledger=upload_ledger,  # re-attaches to an earlier run's unconfirmed import
    ).expand_kwargs(released)  # fmt: skip

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report() -> None:
        """Mark confirmed codes used, publish the summary and alerts (always, even when a task before failed)."""
        coupons.report(get_current_context())

    planned >> approval >> released
    [planned, imports] >> report()
