"""Alerts and guardrails in the DAGs: DAG callbacks, the late-run Deadline Alert, the approval of a held
upload, and the anomaly alerts of a run summary. The rules and the words live in the library
(:mod:`connectif_sync.guardrail`, :mod:`connectif_sync.alerts`), the sending in the provider
(:mod:`connectif_provider.alerts`); this module wires them into Airflow.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException

from connectif_dags.common import DEFAULTS, log, publish_summary, setting
from connectif_provider import alerts as provider_alerts
from connectif_provider import metrics
from connectif_provider.deadlines import QueuedPlusVariable, deadline_variable

#: Task id of the approval step in every DAG that can hold (tests and the REST API address it by this id).
APPROVAL_TASK_ID = "approve_upload"
#: XCom key of the guardrail's verdict, pushed by the task that plans the run.
VERDICT_KEY = "guardrail"


def dag_alerting(dag_id: str, *, late_after: timedelta) -> dict[str, Any]:
    """The ``DAG(...)`` arguments that make a Connectif DAG tell people: failure and recovery callbacks,
    and a Deadline Alert when a run is not done in time after it was queued.

    The deadline is the Airflow Variable ``connectif_deadline_<dag_id>_seconds`` when it exists, else
    ``late_after``: the scheduler reads it when it creates each run (see :mod:`connectif_provider.deadlines`),
    so it changes without a deploy and nothing is read while the DAG file is parsed.
    """
    from airflow.sdk import AsyncCallback, DeadlineAlert

    callbacks = provider_alerts.RunCallbacks(dag_id, late_default=late_after, state_url_default=DEFAULTS["state_url"])
    reference = QueuedPlusVariable(variable=deadline_variable(dag_id), default_seconds=int(late_after.total_seconds()))
    return {
        "on_failure_callback": callbacks.on_failure,
        "on_success_callback": callbacks.on_success,
        "deadline": DeadlineAlert(
            reference=reference,
            interval=timedelta(0),  # the whole span comes from the reference (Variable, else late_after)
            callback=AsyncCallback(
                "connectif_provider.alerts.run_late",
                kwargs={"dag_id": dag_id, "state_url_default": DEFAULTS["state_url"]},
            ),
            name=f"{dag_id}_late",
        ),
    }


def guardrail_thresholds(obj: str, mapping_settings: dict[str, Any] | None = None) -> Any:
    """The object's thresholds: defaults, the mapping's ``guardrail:``, then the Variable ``connectif_guardrail``."""
    from connectif_sync.guardrail import thresholds_for

    return thresholds_for(obj, mapping_settings, provider_alerts.variable("connectif_guardrail"))


def anomaly_thresholds() -> dict[str, float]:
    raw = provider_alerts.variable("connectif_anomaly_thresholds")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'Variable connectif_anomaly_thresholds is not valid JSON ({exc}); e.g. {{"rejected_share_pct": 10}}'
        ) from exc
    return {str(k): float(v) for k, v in parsed.items()}


def report_anomalies(context: Any, summary: dict[str, Any]) -> list[str]:
    """Raise or clear the anomalies of a run summary that do not hold the run; returns the alerts sent."""
    from connectif_sync.alerts import anomalies

    ti = context["ti"]
    sent = []
    for kind, problem in anomalies(summary, anomaly_thresholds()).items():
        alert = provider_alerts.report_state(
            ti.dag_id,
            kind,
            problem is not None,
            problem or "back to normal",
            context=context,
            run_id=ti.run_id,
            state_url_default=setting("state_url"),
        )
        if alert is not None:
            sent.append(f"{alert.kind}: {alert.transition}")
    return sent


def publish_verdict(context: Any, verdict: Any, *, dry_run: bool) -> dict[str, Any]:
    """Log the guardrail's verdict and push it (XCom ``guardrail``); a dry run only reports it."""
    data = verdict.as_dict()
    data["dry_run"] = dry_run
    if dry_run:  # reported, never asked: a dry run sends nothing anyway
        data["would_hold"], data["hold"] = data["hold"], False
    if verdict.fired:
        prefix = "dry run: the guardrail WOULD hold this run" if dry_run else "guardrail"
        log.warning("%s:\n%s", prefix, verdict.summary())
    context["ti"].xcom_push(key=VERDICT_KEY, value=data)
    return data


class GuardrailApprovalOperator(ApprovalOperator):
    """Ask a person to approve an upload the guardrail held; skip at once when nothing holds.

    The request shows the plan (rules that fired, counts, sample keys with before and after values). Approve
    lets the upload go; Reject, or no answer within the timeout, sends nothing (``Reject`` is the default
    taken at the timeout) and alerts. The timeout is the Variable ``connectif_approval_timeout_<dag_id>_minutes``
    (read when the request is made), else ``default_timeout``, which every DAG sets shorter than its schedule.
    """

    template_fields = ("subject", "body", "verdict_task_id")

    def __init__(self, *, verdict_task_id: str, default_timeout: timedelta, **kwargs: Any) -> None:
        kwargs.setdefault("task_id", APPROVAL_TASK_ID)
        kwargs.setdefault("subject", "Connectif upload held by the guardrail")
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)
        kwargs.setdefault("response_timeout", default_timeout)
        super().__init__(**kwargs)
        self.verdict_task_id = verdict_task_id
        self.default_timeout = default_timeout

    def _verdict(self, context: Any) -> Any:
        from connectif_sync.guardrail import Verdict

        data = context["ti"].xcom_pull(task_ids=self.verdict_task_id, key=VERDICT_KEY)
        return Verdict.from_dict(data) if data else None

    def execute(self, context: Any) -> Any:
        from connectif_sync.alerts import AlertKind

        verdict = self._verdict(context)
        if verdict is None or not verdict.hold:
            raise AirflowSkipException("the guardrail did not hold this run: nothing to approve")
        ti = context["ti"]
        minutes = provider_alerts.variable(f"connectif_approval_timeout_{ti.dag_id}_minutes")
        if minutes:
            self.response_timeout = timedelta(minutes=float(minutes))
        rules = ", ".join(str(f.rule) for f in verdict.fired)
        self.subject = f"{ti.dag_id}: approve the {verdict.object} upload? Guardrail: {rules}"
        self.body = verdict.markdown() + (
            f"\n\nWithout an answer within {self.response_timeout}, the upload is rejected."
            if self.response_timeout
            else ""
        )
        metrics.guardrail_hold(verdict.object, [str(f.rule) for f in verdict.fired])
        url = None
        try:
            url = self.generate_link_to_ui(task_instance=ti)
        except ValueError:
            url = None
        state_url = setting("state_url")
        from connectif_sync.store import StateStore

        with StateStore(state_url) as store:  # the late-run alert does not fire while a person is asked
            store.alert_transition(ti.dag_id, str(AlertKind.HOLD), True, ti.run_id)
        provider_alerts.ask(
            ti.dag_id,
            AlertKind.HOLD,
            f"{verdict.summary()}\n\nNothing was sent. Approve or reject under Required actions (timeout "
            f"{self.response_timeout}).",
            context=context,
            run_id=ti.run_id,
            url=url,
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from connectif_sync.alerts import AlertKind
        from connectif_sync.store import StateStore

        ti = context["ti"]
        chosen = (event.get("chosen_options") or [None])[0] if "error" not in event else None
        approved = chosen == self.APPROVE
        by = event.get("responded_by_user") or {}
        who = by.get("name") if isinstance(by, dict) else None
        with StateStore(setting("state_url")) as store:
            store.alert_transition(ti.dag_id, str(AlertKind.HOLD), False)
        decision = "approved" if approved else ("rejected" if who else "timed out (rejected)")
        ti.xcom_push(key="decision", value={"decision": decision, "by": who})
        if approved:
            log.info("upload approved by %s", who)
            provider_alerts.report_state(ti.dag_id, AlertKind.REJECTED_UPLOAD, False,
                                         f"The held upload was approved by {who}.", context=context,
                                         run_id=ti.run_id, state_url_default=setting("state_url"))  # fmt: skip
        else:
            verdict = self._verdict(context)
            provider_alerts.report_state(
                ti.dag_id,
                AlertKind.REJECTED_UPLOAD,
                True,
                f"The held upload was {decision}{' by ' + who if who else ''}: nothing was sent to Connectif.\n"
                + (verdict.summary() if verdict is not None else ""),
                context=context,
                run_id=ti.run_id,
                state_url_default=setting("state_url"),
            )
        return super().execute_complete(context, event)


def approval_decision(ti: Any) -> str | None:
    """``approved``, ``rejected``, ``timed out (rejected)``, or None when nothing was held."""
    pulled = ti.xcom_pull(task_ids=APPROVAL_TASK_ID, key="decision")
    return pulled.get("decision") if isinstance(pulled, dict) else None


def publish_if_held(context: Any, obj: str) -> dict[str, Any] | None:
    """When the guardrail held this run and nobody approved, publish the summary that says nothing was sent
    (the skipped send task left no result to report) and return it; None when the run was not held back."""
    decision = approval_decision(context["ti"])
    if decision is None or decision == "approved":
        return None
    return publish_summary(
        context,
        {
            "object": obj,
            "sent": 0,
            "imports": 0,
            "guardrail": {"held": True, "decision": decision},
            "notes": [f"guardrail held the run; upload {decision}: nothing was sent"],
        },
    )
