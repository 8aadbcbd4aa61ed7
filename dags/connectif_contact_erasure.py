"""Airflow DAG, daily: contacts listed in the ERP's erasure requests are deleted from Connectif."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, TriggerRule, get_current_context, task
from connectif_dags import erasure
from connectif_dags.alerting import GuardrailApprovalOperator, dag_alerting
from connectif_dags.common import CURRENT_STATE_RUN_TYPES, DEFAULT_ARGS, TAGS, cron_schedule, dry_run_param

DOC = """
### Right to erasure: ERP requests → Connectif, daily

Reads the ERP's pending erasure requests (sample ERP: table `erasure_requests`, `done_at` empty), deletes
each contact from Connectif (`DELETE /contacts/email/{email}`) and writes `done_at` in the ERP **right
after** Connectif confirmed, so a run that stops half-way resumes with exactly what is left.

* An email Connectif does not know (404) **counts as done**: there is nothing left to erase. Each outcome is
  recorded in the state store (`connectif_sync_erasures`) before `done_at`: when a try fails after deleting
  (e.g. the ERP refused the write), the retry's 404 counts as **deleted**, and the summary counts every
  request of the run, earlier tries included.
* Emails are normalised like the contacts sync does (trimmed, lower-cased). A request whose email is not an
  email address is **not** marked done: it is set aside in the rejected store with its reason, for a human
  to fix in the ERP.
* Each erased email goes on the state store's **suppression list** in the same step: the contacts sync never
  sends it again (full scans, watermark runs and full resyncs alike) even while the ERP still has the
  customer, and sets the row aside as `suppressed` in the rejected store. `connectif-sync suppressed` lists
  them; `connectif-sync unsuppress --object contacts EMAIL` withdraws one.
* Connectif deletes the contact's activities but keeps purchases and statistics. The purchases DAG does not
  send new purchases of a suppressed contact (repairing the missing contact would create it again): they
  are kept with the reason `suppressed` and go once the suppression is withdrawn.

**Params** — `dry_run`: list how many contacts would be deleted and the API requests it takes; delete
nothing, write nothing.

**No backfills**: a run processes every erasure request still open, whatever its date, so Airflow refuses
a backfill. Trigger a run instead.
"""

with DAG(
    dag_id="connectif_contact_erasure",
    description="Daily: delete from Connectif the contacts of the ERP's erasure requests",
    schedule=cron_schedule("0 3 * * *"),
    catchup=False,
    max_active_runs=1,
    allowed_run_types=CURRENT_STATE_RUN_TYPES,  # a backfill would only repeat today's work
    default_args=DEFAULT_ARGS,
    params={"dry_run": dry_run_param()},
    tags=[*TAGS, "gdpr"],
    doc_md=DOC,
    **dag_alerting("connectif_contact_erasure", late_after=timedelta(hours=1)),
) as dag:

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def check() -> bool:
        """Guardrail: more than ``max_rows`` pending requests wait for approval (deletions cannot be undone)."""
        return erasure.check(get_current_context())

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def erase() -> dict[str, Any]:
        """Delete each pending request's contact and record it done at once (or, in a dry run, count)."""
        return erasure.erase(get_current_context())

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report() -> None:
        """Publish the run summary (also when ``erase`` failed: then it says so, and fails; or was held back)."""
        erasure.report(get_current_context())

    approval = GuardrailApprovalOperator(verdict_task_id="check", default_timeout=timedelta(hours=12))
    check() >> approval >> erase() >> report()
