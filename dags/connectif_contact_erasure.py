"""Airflow DAG, daily: contacts listed in the ERP's erasure requests are deleted from Connectif."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, TriggerRule, get_current_context, task
from connectif_dags.alerting import (
    GuardrailApprovalOperator,
    dag_alerting,
    guardrail_thresholds,
    publish_if_held,
    publish_verdict,
)
from connectif_dags.common import (
    CONN_ID,
    CURRENT_STATE_RUN_TYPES,
    DEFAULT_ARGS,
    TAGS,
    calls_estimate,
    dry_run_param,
    new_summary,
    publish_summary,
    setting,
    upstream_result,
)

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


def _reasons(invalid: list[dict[str, Any]]) -> dict[str, int]:
    """``{"field: reason": n}`` of the requests set aside, as the sync library counts its rejects."""
    out: dict[str, int] = {}
    for r in invalid:
        label = f"{r['field']}: {r['reason']}"
        out[label] = out.get(label, 0) + 1
    return out


with DAG(
    dag_id="connectif_contact_erasure",
    description="Daily: delete from Connectif the contacts of the ERP's erasure requests",
    schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
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
        """Guardrail: deleting contacts cannot be undone; more than ``max_rows`` pending requests wait for
        approval (default 100; Variable ``connectif_guardrail``, entry ``erasure``)."""
        import sqlalchemy as sa

        from connectif_sync.erasure import pending_erasures
        from connectif_sync.guardrail import evaluate_count

        context = get_current_context()
        engine = sa.create_engine(setting("source_url"))
        try:
            pending = pending_erasures(engine)
        finally:
            engine.dispose()
        verdict = evaluate_count("erasure", len(pending), guardrail_thresholds("erasure"), [r.email for r in pending])
        return bool(publish_verdict(context, verdict, dry_run=bool(context["params"]["dry_run"]))["hold"])

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def erase() -> dict[str, Any]:
        """Delete each pending request's contact and record it done at once (or, in a dry run, count)."""
        import pyarrow as pa
        import sqlalchemy as sa

        from connectif_provider.hooks.connectif import ConnectifHook
        from connectif_sync.erasure import erase_contacts, pending_erasures
        from connectif_sync.mappings import FieldSpec
        from connectif_sync.shape import shape_email
        from connectif_sync.state import StateStore

        context = get_current_context()
        ti = context["ti"]
        dry_run = bool(context["params"]["dry_run"])
        engine = sa.create_engine(setting("source_url"))
        try:
            pending = pending_erasures(engine)
            shaped, problems = shape_email(
                FieldSpec(name="_email", column="email", type="email"),
                pa.array([r.email for r in pending], pa.string()),
            )
            emails = shaped.to_pylist()
            bad = set()
            for problem in problems:
                bad.update(int(i) for i in problem.mask.nonzero()[0])
            invalid = [
                {
                    "key": pending[i].email,
                    "source_ref": f"id={pending[i].id}",
                    "field": "email",
                    "reason": "invalid email address" if emails[i] else "empty email",
                    "value": pending[i].email[:200],
                }
                for i in range(len(pending))
                if i in bad or not emails[i]
            ]
            todo = [(r.id, emails[i]) for i, r in enumerate(pending) if i not in bad and emails[i]]
            if dry_run:
                return {"dry_run": True, "pending": len(pending), "to_delete": len(todo), "invalid": invalid}
            hook = ConnectifHook(CONN_ID)
            with StateStore(setting("state_url")) as store:
                run_id = store.begin_run("erasure", "erasure", None, f"{ti.dag_id}/{ti.run_id}/{ti.try_number}")
                store.record_rejected("erasure", run_id, invalid)
                # Counted per DAG run, over all its tries: a retry counts what earlier tries deleted.
                counts = erase_contacts(todo, hook.delete_contact, store, engine, run=f"{ti.dag_id}/{ti.run_id}")
                report = {"deleted": counts.deleted, "absent": counts.absent}
                store.finish_run(run_id, files=[], high_water=None, report=report)
            return {
                "dry_run": False,
                "library_run_id": run_id,
                "pending": len(pending),
                "to_delete": len(todo),
                "deleted": counts.deleted,
                "absent": counts.absent,
                "deleted_by_earlier_try": counts.deleted_by_earlier_try,
                "finished_by_earlier_tries": counts.finished_by_earlier_tries,
                "invalid": invalid,
            }
        finally:
            engine.dispose()

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report() -> None:
        """Publish the run summary (also when ``erase`` failed: then it says so, and fails; or was held back)."""
        from connectif_sync.contract import RunState, SyncObject

        if publish_if_held(get_current_context(), "contact_erasure") is not None:
            return
        erased = upstream_result(get_current_context(), "contact_erasure", "erase")
        invalid = erased["invalid"]
        notes = [f"request {r['source_ref']}: {r['reason']} ({r['value']!r}), left pending" for r in invalid[:10]]
        if erased.get("absent"):
            notes.append(f"{erased['absent']} emails were not in Connectif (counted as done)")
        if erased.get("finished_by_earlier_tries"):
            notes.append(f"{erased['finished_by_earlier_tries']} requests were finished by an earlier try of this run")
        if erased.get("deleted_by_earlier_try"):
            notes.append(
                f"{erased['deleted_by_earlier_try']} contacts deleted by an earlier try (404 now) counted as deleted"
            )
        estimate = calls_estimate(erased["to_delete"])
        summary = new_summary(
            get_current_context(),
            SyncObject.CONTACT_ERASURE,
            dry_run=erased["dry_run"],
            state=RunState.PLANNED if erased["dry_run"] else RunState.SUCCESS,
            library_run_id=erased.get("library_run_id"),
            to_send=erased["to_delete"],
            sent=erased.get("deleted", 0) + erased.get("absent", 0),
            deleted=erased.get("deleted", 0),
            invalid=len(invalid),
            rejected=len(invalid),
            rejected_by_reason=_reasons(invalid),
            api_requests=estimate if erased["dry_run"] else erased["to_delete"],
            plan=estimate if erased["dry_run"] else None,
            notes=notes,
            extra={"pending": erased["pending"], "to_delete": erased["to_delete"], "absent": erased.get("absent", 0)},
        )
        publish_summary(get_current_context(), summary)
        if not erased["dry_run"]:
            from connectif_provider import metrics

            metrics.rows("erasure", sent=summary.sent, rejected=summary.rejected)

    approval = GuardrailApprovalOperator(verdict_task_id="check", default_timeout=timedelta(hours=12))
    check() >> approval >> erase() >> report()
