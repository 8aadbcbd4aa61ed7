"""Airflow DAG, hourly: the ERP's orders of each hour sent to Connectif as purchases (one API call each)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, get_current_context, task
from connectif_dags import purchases
from connectif_dags.alerting import GuardrailApprovalOperator, dag_alerting
from connectif_dags.common import CONN_ID, DEFAULT_ARGS, PURCHASES_POOL, TAGS, upload_ledger

from connectif_provider.operators.purchases import ConnectifPurchasesOperator

DOC = """
### ERP orders → Connectif purchases, hourly

Connectif has no bulk import for purchases: each paid order is one `POST /purchases/` request, bounded by
the rate limit (this deployment's shared bucket: 90/min, about 5,400 purchases an hour, for every task).

* **Data intervals.** Each run covers its hour `[data_interval_start, data_interval_end)` of order dates
  (`CronDataIntervalTimetable`), reaching back `lookback_hours` (default 24) to retry purchases kept by
  earlier runs and to catch orders that arrived late. **Backfill** a date range from the UI (*Trigger* →
  *Backfill*), `POST /api/v2/backfills` or `airflow backfill create --dag-id connectif_purchases
  --from-date ... --to-date ...`.
* **One interval at a time.** `send` runs in pool `connectif_purchases` (1 slot): however many runs a
  backfill starts (REST and CLI default to 10), one hour sends at a time, broadly oldest first, and the hourly
  scheduled run takes its turn in the same queue. Give the pool more slots to send several hours at once.
* **Idempotent and resumable.** Each outcome is recorded by `purchaseId` right after its request, so a retry
  or a re-run never sends one twice (a `409` / "already exists" counts as done).
* **Missing contact or product** (E0101/E0102): the contact is upserted by email, the products from the
  purchase's lines, then the purchase is sent again. A purchase that still fails (e.g. E0103, a product
  URL outside the authorised domains) is **kept** and retried by the next runs; the summary lists it.
* **Invalid orders** (bad email, negative price...) are set aside in the rejected store with their reason.

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
    params=purchases.PARAMS,
    user_defined_macros={"connectif_trigger_purchase_event": purchases.trigger_purchase_event},
    tags=[*TAGS, "purchases"],
    doc_md=DOC,
    **dag_alerting("connectif_purchases", late_after=timedelta(minutes=45)),
) as dag:

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def check() -> bool:
        """Guardrail: count the purchases this run would send; more than ``max_rows`` waits for approval."""
        return purchases.check(get_current_context())

    send = ConnectifPurchasesOperator(
        task_id="send",  # skipped when a held run is rejected
        purchases=purchases.window_purchases,
        ledger=upload_ledger,  # the state store
        trigger_purchase_event=purchases.TRIGGER_TEMPLATE,
        plan_only="{{ params.dry_run }}",
        connectif_conn_id=CONN_ID,
        pool=PURCHASES_POOL,
        trigger_rule=TriggerRule.NONE_FAILED,
    )

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report() -> None:
        """Publish the run summary (also when ``send`` failed: then it says so, and fails; or was held back)."""
        purchases.report(get_current_context())

    approval = GuardrailApprovalOperator(verdict_task_id="check", default_timeout=timedelta(minutes=45))
    check() >> approval >> send >> report()
