"""Airflow DAG, every 30 minutes: refill Connectif coupon sets that run low with unused codes from the ERP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param, TriggerRule, get_current_context, task
from connectif_dags.alerting import dag_alerting
from connectif_dags.common import (
    CONN_ID,
    CURRENT_STATE_RUN_TYPES,
    DEFAULT_ARGS,
    IMPORTS_POOL,
    POLL_INTERVAL,
    TAGS,
    dry_run_param,
    import_summaries,
    new_summary,
    publish_summary,
    remove_run_dir,
    run_dir,
    setting,
    upload_ledger,
)

from connectif_provider.operators.connectif import ConnectifImportOperator

DOC = """
### ERP coupon pool → Connectif coupon sets, every 30 minutes

1. **plan** lists the account's coupon sets and keeps the `multiple` sets used by at least one **active**
   workflow whose `available` codes fell below `threshold`. For each, it takes the oldest unused codes of
   the ERP's pool (sample ERP: `coupon_pool`, `status = 'unused'`) to get back to `refill_to`, validates
   them with the coupons mapping (empty, too long or repeated codes go to the rejected store and are not
   picked again) and writes one CSV per set.
2. **import_codes** — one Connectif coupons import per set (`couponSetId`), deferred, pool `connectif_imports`.
3. **report** marks the codes **used in the ERP only once Connectif confirmed them**; codes in an import's
   error report stay unused and are reported.

**Params** — `threshold` (default 100), `refill_to` (default 500), `dry_run` (show which sets would get
how many codes; import nothing, mark nothing).

**No backfills**: a run tops up the sets as they are now; past dates have nothing to refill, so Airflow
refuses a backfill. Trigger a run instead.
"""

with DAG(
    dag_id="connectif_coupons",
    description="Every 30 min: refill low Connectif coupon sets from the ERP's coupon pool",
    schedule=CronTriggerTimetable("*/30 * * * *", timezone="UTC"),
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
        """Choose the sets to refill and write their code files; returns one import's arguments per file."""
        import dataclasses

        import sqlalchemy as sa
        from connectif_dags.common import mapping_for

        from connectif_provider.exceptions import ConnectifNotFoundError
        from connectif_provider.hooks.connectif import ConnectifHook
        from connectif_sync.coupons import choose_coupon_sets, take_unused_codes
        from connectif_sync.mappings import resolve_mapping
        from connectif_sync.pipeline import run_sync
        from connectif_sync.state import StateStore

        context = get_current_context()
        ti = context["ti"]
        params = context["params"]
        dry_run = bool(params["dry_run"])
        hook = ConnectifHook(CONN_ID)
        statuses: dict[str, str | None] = {}

        def workflow_status(workflow_id: str) -> str | None:
            if workflow_id not in statuses:
                try:
                    statuses[workflow_id] = str(hook.get_workflow(workflow_id).get("status"))
                except ConnectifNotFoundError:
                    statuses[workflow_id] = None
            return statuses[workflow_id]

        needs = choose_coupon_sets(
            list(hook.list_coupon_sets()),
            workflow_status,
            threshold=int(params["threshold"]),
            refill_to=int(params["refill_to"]),
        )
        mapping = resolve_mapping("coupons", mapping_for("coupons"))
        id_column = mapping.order_by[0] if mapping.order_by else None
        if id_column is None:
            raise ValueError(f"{mapping.path}: the coupons mapping needs order_by with the pool's id column first")
        with StateStore(setting("state_url"), readonly=True) as store:
            refused = {
                int(r["source_ref"].split("=", 1)[1].split(",")[0])
                for r in store.rejected(None, limit=100_000)
                if r["object"] == "coupons" and str(r.get("source_ref") or "").startswith(f"{id_column}=")
            }
        engine = sa.create_engine(setting("source_url"))
        try:
            taken = {n.coupon_set_id: take_unused_codes(engine, n.coupon_set_id, n.wanted, exclude_ids=sorted(refused))
                     for n in needs}  # fmt: skip
            quote = engine.dialect.identifier_preparer.quote
        finally:
            engine.dispose()
        ids = sorted(c.id for codes in taken.values() for c in codes)
        selected: dict[str, dict[str, int]] = {}
        for set_id, codes in taken.items():  # code -> pool id; the first row of a repeated code is the one sent
            for c in codes:
                if c.code is not None:
                    selected.setdefault(set_id, {}).setdefault(str(c.code), c.id)
        plan_info: dict[str, Any] = {
            "dry_run": dry_run,
            "needs": [n.as_dict() for n in needs],
            "selected": selected,
            "report": None,
            "refused_earlier": len(refused),
        }
        files: list[dict[str, Any]] = []
        if ids:
            source = mapping.sql if mapping.sql else f"SELECT * FROM {mapping.table}"
            only = ", ".join(str(int(i)) for i in ids)
            restricted = dataclasses.replace(
                mapping, table=None, sql=f"SELECT * FROM ({source}) pool WHERE pool.{quote(id_column)} IN ({only})"
            )
            result = run_sync(
                "coupons",
                setting("source_url"),
                None if dry_run else run_dir(context),
                state_url=setting("state_url"),
                mapping=restricted,
                dry_run=dry_run,
                run_id=f"{ti.dag_id}/{ti.run_id}/{ti.try_number}",
            )
            plan_info["report"] = result.report.as_dict()
            plan_info["rejected"] = [f"{r['source_ref']}: {r['field']} {r['reason']}" for r in result.rejected[:20]]
            if not dry_run:
                files = [{"file_path": f.path, "coupon_set_id": f.partition} for f in result.files]
        ti.xcom_push(key="plan", value=plan_info)
        return files

    planned = plan()
    imports = ConnectifImportOperator.partial(
        task_id="import_codes",
        import_type="coupons",
        connectif_conn_id=CONN_ID,
        poll_interval=POLL_INTERVAL,
        pool=IMPORTS_POOL,
        upload_ledger=upload_ledger,  # a later run re-attaches to an earlier run's unconfirmed import
    ).expand_kwargs(planned)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report() -> None:
        """Mark the codes Connectif confirmed as used in the ERP, and publish the summary (always, even when
        a task before failed)."""
        import csv

        import sqlalchemy as sa
        from airflow.sdk.exceptions import AirflowFailException

        from connectif_sync.contract import ImportOutcome, RunState, SyncObject
        from connectif_sync.coupons import mark_codes_used
        from connectif_sync.import_rejects import record_import_rejects, with_keys
        from connectif_sync.state import StateStore

        context = get_current_context()
        ti = context["ti"]
        files = ti.xcom_pull(task_ids="plan")
        info = ti.xcom_pull(task_ids="plan", key="plan")
        if not isinstance(info, dict) or files is None:  # plan failed: nothing was sent
            publish_summary(context, {"object": "coupons", "failed": "plan", "sent": 0, "imports": 0,
                                      "notes": ["plan failed: nothing was sent; its log says why"]})  # fmt: skip
            raise AirflowFailException("coupons: plan failed, nothing was sent (see the plan task's log)")
        rep = info.get("report") or {}
        summaries = import_summaries(ti, "import_codes", len(files))
        used: dict[str, int] = {}
        connectif_rejected = unconfirmed = 0
        notes = [f"refill {n['coupon_set_id']} ({n['name']}): {n['available']} available, wants {n['wanted']}"
                 for n in info["needs"]]  # fmt: skip
        notes += info.get("rejected", [])
        if not info["dry_run"]:
            engine = sa.create_engine(setting("source_url"))
            try:
                with StateStore(setting("state_url")) as store:
                    summaries = [with_keys(s) for s in summaries]  # the code of each line Connectif rejected
                    for s in summaries:
                        if store.confirm_import(s).get("unconfirmed"):  # no proof of which codes arrived
                            unconfirmed += 1
                            notes.append(f"{s['file_path']}: import {s['import_id']} has no complete error "
                                         "report; its codes stay unused in the ERP and go again next run")  # fmt: skip
                            continue
                        with open(s["file_path"], newline="", encoding="utf-8") as fh:
                            codes = [row["code"] for row in csv.DictReader(fh)]
                        record_import_rejects(store, "coupons", rep.get("run_id"), s)
                        failed = {int(r["line"]) for r in s.get("rejected_rows") or []}
                        connectif_rejected += len(failed)
                        set_id = next(f["coupon_set_id"] for f in files if f["file_path"] == s["file_path"])
                        by_code = info["selected"].get(set_id, {})
                        ok = [by_code[c] for n, c in enumerate(codes, start=1) if n not in failed and c in by_code]
                        used[set_id] = mark_codes_used(engine, set_id, ok)
                        notes += [
                            f"{set_id} line {r['line']}: {r['error']}" for r in (s.get("rejected_rows") or [])[:5]
                        ]
            finally:
                engine.dispose()
        summary = new_summary(
            context,
            SyncObject.COUPONS,
            dry_run=info["dry_run"],
            state=RunState.PLANNED if info["dry_run"] else RunState.SUCCESS,
            library_run_id=rep.get("run_id"),
            to_send=rep.get("sent", 0),
            sent=sum(used.values()),
            unchanged=rep.get("unchanged", 0),
            invalid=rep.get("invalid", 0),
            duplicate=rep.get("duplicate", 0),
            rejected=rep.get("invalid", 0) + rep.get("duplicate", 0) + connectif_rejected,
            rejected_by_connectif=connectif_rejected,
            rejected_by_reason=dict(rep.get("rejected_by_reason") or {}),
            api_requests=rep.get("api_requests"),
            plan=rep.get("api_requests") if info["dry_run"] else None,
            import_outcomes=[ImportOutcome.from_operator(s) for s in summaries],
            notes=notes,
            extra={"sets_refilled": len(info["needs"]), "marked_used": used},
        )
        if unconfirmed or len(summaries) < len(files):
            summary.state = RunState.INCOMPLETE
        publish_summary(context, summary)
        if unconfirmed:
            raise AirflowFailException(
                f"{unconfirmed} coupon imports finished without a complete error report: their codes stay unused "
                "in the ERP and are picked again by the next run"
            )
        if len(summaries) < len(files):
            raise AirflowFailException(
                f"{len(files) - len(summaries)} of {len(files)} coupon imports did not finish; their codes stay "
                "unused in the ERP and are picked again by the next run"
            )
        if not info["dry_run"]:
            remove_run_dir(context)

    reported = report()
    [planned, imports] >> reported
