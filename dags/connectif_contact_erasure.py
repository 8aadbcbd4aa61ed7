"""Airflow DAG, daily: contacts listed in the ERP's erasure requests are deleted from Connectif."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, get_current_context, task
from connectif_dags.common import (
    CONN_ID,
    DEFAULT_ARGS,
    TAGS,
    calls_estimate,
    dry_run_param,
    new_summary,
    publish_summary,
    setting,
)

DOC = """
### Right to erasure: ERP requests → Connectif, daily

Reads the ERP's pending erasure requests (sample ERP: table `erasure_requests`, `done_at` empty), deletes
each contact from Connectif (`DELETE /contacts/email/{email}`) and writes `done_at` in the ERP **right
after** Connectif confirmed, so a run that stops half-way resumes with exactly what is left.

* An email Connectif does not know (404) **counts as done**: there is nothing left to erase.
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
    default_args=DEFAULT_ARGS,
    params={"dry_run": dry_run_param()},
    tags=[*TAGS, "gdpr"],
    doc_md=DOC,
) as dag:

    @task
    def erase() -> dict[str, Any]:
        """Delete each pending request's contact and record it done at once (or, in a dry run, count)."""
        import pyarrow as pa
        import sqlalchemy as sa

        from connectif_provider.hooks.connectif import ConnectifHook
        from connectif_sync.erasure import mark_erasures_done, pending_erasures
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
            deleted = absent = 0
            hook = ConnectifHook(CONN_ID)
            with StateStore(setting("state_url")) as store:
                run_id = store.begin_run("erasure", "erasure", None, f"{ti.dag_id}/{ti.run_id}/{ti.try_number}")
                store.record_rejected("erasure", run_id, invalid)
                for request_id, email in todo:
                    if hook.delete_contact(email):
                        deleted += 1
                    else:
                        absent += 1
                    # Before the request is marked done: a run stopped in between suppresses it again.
                    store.suppress("contacts", [email], f"erasure request id={request_id}")
                    mark_erasures_done(engine, [request_id])
                store.finish_run(run_id, files=[], high_water=None, report={"deleted": deleted, "absent": absent})
            return {
                "dry_run": False,
                "library_run_id": run_id,
                "pending": len(pending),
                "to_delete": len(todo),
                "deleted": deleted,
                "absent": absent,
                "invalid": invalid,
            }
        finally:
            engine.dispose()

    @task
    def report(erased: dict[str, Any]) -> None:
        """Publish the run summary."""
        from connectif_sync.contract import RunState, SyncObject

        invalid = erased["invalid"]
        notes = [f"request {r['source_ref']}: {r['reason']} ({r['value']!r}), left pending" for r in invalid[:10]]
        if erased.get("absent"):
            notes.append(f"{erased['absent']} emails were not in Connectif (counted as done)")
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

    report(erase())
