"""Connectif sync alerts through Airflow notifiers: e-mail (SMTP provider) plus any notifier you configure.

Who is told is configuration, read when an alert is sent (no deploy needed to change it):

* Variable ``connectif_alert_email``: comma-separated addresses; sent with the SMTP provider's
  ``SmtpNotifier`` through the connection ``connectif_alert_smtp_conn_id`` (default ``smtp_default``), from
  ``connectif_alert_from`` (default ``airflow-connectif@localhost``).
* Variable ``connectif_alert_notifiers``: a JSON list of ``{"class": "<dotted path of a BaseNotifier>",
  "kwargs": {...}}``, e.g. Slack's ``airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier``
  with ``{"slack_webhook_conn_id": "slack", "text": "{{ connectif_alert.subject }}\\n{{ connectif_alert.text }}"}``.
  Templates see the alert as ``connectif_alert`` (subject, text, html, kind, transition, source, run_id, url).

Each Variable may also come from the environment (``CONNECTIF_ALERT_EMAIL``...). Alert states (only changes
are told) are kept in the state store (:mod:`connectif_sync.alerts`). Code here runs in workers, in the DAG
processor (DAG callbacks) and in the triggerer (deadline callbacks, through a thread: nothing blocks its loop).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from connectif_provider import metrics
from connectif_provider.deadlines import deadline_variable, seconds_from
from connectif_provider.utils.dates import parse_iso

log = logging.getLogger(__name__)

DEFAULT_FROM = "airflow-connectif@localhost"
DEFAULT_SMTP_CONN_ID = "smtp_default"


def variable(name: str, default: str | None = None) -> str | None:
    """Airflow Variable ``name``, else environment variable ``NAME``, else ``default``."""
    value: Any = None
    try:
        from airflow.sdk import Variable

        value = Variable.get(name, default=None)
    except Exception:
        log.debug("Variable %s not readable here", name, exc_info=True)
    if value in (None, ""):
        value = os.environ.get(name.upper())
    return default if value in (None, "") else str(value)


def notifiers() -> list[Any]:
    """The notifiers configured now (see the module docstring); an empty list logs the alert only."""
    out: list[Any] = []
    to = [a.strip() for a in (variable("connectif_alert_email") or "").replace(";", ",").split(",") if a.strip()]
    if to:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        out.append(
            SmtpNotifier(
                to=to,
                from_email=variable("connectif_alert_from", DEFAULT_FROM),
                subject="{{ connectif_alert.subject }}",
                html_content="{{ connectif_alert.html }}",
                smtp_conn_id=variable("connectif_alert_smtp_conn_id", DEFAULT_SMTP_CONN_ID),
            )
        )
    raw = variable("connectif_alert_notifiers")
    if raw:
        from airflow.sdk._shared.module_loading import import_string

        try:
            specs = json.loads(raw)
            if not isinstance(specs, list):
                raise ValueError("not a list")
        except ValueError as exc:
            raise ValueError(
                f'Variable connectif_alert_notifiers must be a JSON list of {{"class": ..., "kwargs": {{...}}}} ({exc})'
            ) from exc
        for spec in specs:
            cls = import_string(spec["class"])
            out.append(cls(**(spec.get("kwargs") or {})))
    return out


def send(alert: Any, context: Mapping[str, Any] | None = None) -> int:
    """Send ``alert`` (a :class:`connectif_sync.alerts.Alert`) through every notifier; returns how many took it.

    A notifier that fails is logged and the others still run: one broken channel must not silence the rest.
    """
    return _deliver(alert, context)[0]


def _deliver(alert: Any, context: Mapping[str, Any] | None) -> tuple[int, int]:
    """(notifiers that took the alert, notifiers configured)."""
    ctx: dict[str, Any] = dict(context or {})
    ctx["connectif_alert"] = alert.as_dict()
    log.warning("Connectif alert (%s, %s): %s\n%s", alert.kind, alert.transition, alert.subject, alert.text)
    sent = 0
    channels = notifiers()
    for notifier in channels:
        try:
            notifier(ctx)
            sent += 1
        except Exception:
            log.exception("notifier %s could not send the alert %r", type(notifier).__name__, alert.subject)
    metrics.alert(str(alert.kind), alert.transition)
    return sent, len(channels)


def state_url(default: str | None = None) -> str | None:
    return variable("connectif_state_url", default)


def run_url(dag_id: str, run_id: str | None) -> str | None:
    """The run's page in the Airflow UI (``[api] base_url``), when known."""
    try:
        from airflow.providers.common.compat.sdk import conf

        base = conf.get("api", "base_url", fallback=None)
    except Exception:
        base = None
    if not base or not run_id:
        return None
    from urllib.parse import quote

    return f"{base.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id)}"


def report_state(
    source: str,
    kind: Any,
    active: bool,
    detail: str,
    *,
    state_url_default: str | None = None,
    context: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> Any:
    """Record alert (source, kind) as ``active`` or not; tell people when that changed. Returns the alert
    sent, or None."""
    from connectif_sync.alerts import on_state
    from connectif_sync.store import StateStore

    with StateStore(state_url(state_url_default)) as store:
        alert = on_state(store, source, kind, active, detail, run_id, run_url(source, run_id))
    if alert is None:
        return None
    try:
        sent, channels = _deliver(alert, context)
    except Exception:
        log.exception("the alert %r could not be sent", alert.subject)
        sent, channels = 0, 1
    if channels and not sent:  # told nobody: undo the change, so that the next run tells again
        with StateStore(state_url(state_url_default)) as store:
            store.alert_transition(source, str(kind), not active, None if active else detail)
        log.warning("no channel took the alert %r: its state is left as it was, the next run tries again",
                    alert.subject)  # fmt: skip
    return alert


def ask(source: str, kind: Any, detail: str, *, context: Mapping[str, Any] | None = None,
        run_id: str | None = None, url: str | None = None) -> Any:  # fmt: skip
    """An alert that is a question to people (a guardrail hold): sent every time."""
    from connectif_sync.alerts import compose

    alert = compose(source, kind, "ask", detail, run_id, url or run_url(source, run_id))
    send(alert, context)
    return alert


def _run_id(context: Mapping[str, Any]) -> str | None:
    dag_run = context.get("dag_run")
    if isinstance(dag_run, Mapping):
        return dag_run.get("dag_run_id") or dag_run.get("run_id")
    return context.get("run_id") or getattr(dag_run, "run_id", None)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = parse_iso(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def late_after(dag_id: str, default: timedelta) -> timedelta:
    """A DAG's run deadline: Variable ``connectif_deadline_<dag_id>_seconds``, else ``default`` (the same rule
    as the scheduler's, :class:`connectif_provider.deadlines.QueuedPlusVariable`)."""
    name = deadline_variable(dag_id)
    return seconds_from(variable(name), default, name)


class RunCallbacks:
    """The DAG-level callbacks of a Connectif DAG: a failed run raises ``failure``; a successful run clears
    it, and clears ``late`` when it finished within its deadline."""

    def __init__(self, dag_id: str, *, late_default: timedelta, state_url_default: str | None) -> None:
        self.dag_id = dag_id
        self.late_default = late_default
        self.state_url_default = state_url_default

    def on_failure(self, context: Mapping[str, Any]) -> None:
        from connectif_sync.alerts import AlertKind

        run_id = _run_id(context)
        reason = context.get("reason") or "a task failed"
        exc = context.get("exception")
        detail = f"Reason: {reason}" + (f"\nError: {exc}" if exc else "")
        report_state(self.dag_id, AlertKind.FAILURE, True, detail, context=context, run_id=run_id,
                     state_url_default=self.state_url_default)  # fmt: skip

    def on_success(self, context: Mapping[str, Any]) -> None:
        from connectif_sync.alerts import AlertKind

        run_id = _run_id(context)
        report_state(self.dag_id, AlertKind.FAILURE, False, "The last run succeeded.", context=context,
                     run_id=run_id, state_url_default=self.state_url_default)  # fmt: skip
        dag_run = context.get("dag_run")
        start = _when(getattr(dag_run, "queued_at", None) or getattr(dag_run, "start_date", None))
        end = _when(getattr(dag_run, "end_date", None)) or datetime.now(UTC)
        if start is not None and end - start <= late_after(self.dag_id, self.late_default):
            report_state(self.dag_id, AlertKind.LATE, False, "The last run finished within its deadline.",
                         context=context, run_id=run_id, state_url_default=self.state_url_default)  # fmt: skip


def _late_sync(dag_id: str, context: Mapping[str, Any], state_url_default: str | None) -> None:
    from connectif_sync.alerts import AlertKind

    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    run_id = dag_run.get("dag_run_id") if isinstance(dag_run, Mapping) else None
    state = dag_run.get("state") if isinstance(dag_run, Mapping) else None
    detail = (
        f"The run {run_id} (queued at {dag_run.get('queued_at') if isinstance(dag_run, Mapping) else '?'}) had not "
        f"finished by its deadline {deadline.get('deadline_time')}; it is {state}. Is the scheduler, a worker "
        "or the triggerer down, or is Connectif slow? Tune the deadline with the Variable "
        f"connectif_deadline_{dag_id}_seconds."
    )
    from connectif_sync.store import StateStore

    with StateStore(state_url(state_url_default)) as store:
        held = [a for a in store.alerts(dag_id) if a["kind"] == str(AlertKind.HOLD) and a["active"]]
    if run_id is not None and any(a.get("detail") == run_id for a in held):
        log.info("%s %s is past its deadline while waiting for an approval: not a late run", dag_id, run_id)
        return
    report_state(dag_id, AlertKind.LATE, True, detail, context=context, run_id=run_id,
                 state_url_default=state_url_default)  # fmt: skip


async def run_late(*, dag_id: str, state_url_default: str | None = None,
                   context: Mapping[str, Any] | None = None) -> None:  # fmt: skip
    """Deadline Alert callback (runs in the triggerer): the run is late. The state store, the Variables and
    the SMTP session are synchronous, so they run in a thread and the triggerer's loop never blocks."""
    await asyncio.to_thread(_late_sync, dag_id, dict(context or {}), state_url_default)
