"""The Connectif metrics, through Airflow's own metrics (StatsD or OpenTelemetry, as ``[metrics]`` configures).

Names are stable (dashboards and alert rules depend on them; README "Alerts and guardrails" lists them).
Each metric is emitted under one name with tags (OpenTelemetry, Datadog, InfluxDB StatsD read them); the
per-object counters also carry the object in the name, for plain StatsD, which has no tags.
Nothing here may break a sync: a metrics backend that fails is logged and ignored.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "connectif"
ROWS_SENT = f"{PREFIX}.rows_sent"
ROWS_REJECTED = f"{PREFIX}.rows_rejected"
API_REQUESTS = f"{PREFIX}.api_requests"
RATE_LIMITED = f"{PREFIX}.api_429"
RATE_LIMIT_WAIT = f"{PREFIX}.rate_limit_wait_ms"
GUARDRAIL_HOLDS = f"{PREFIX}.guardrail_holds"
ALERTS = f"{PREFIX}.alerts"

ALL = (ROWS_SENT, ROWS_REJECTED, API_REQUESTS, RATE_LIMITED, RATE_LIMIT_WAIT, GUARDRAIL_HOLDS, ALERTS)


def _stats() -> Any:
    from airflow.sdk.observability import stats

    return stats


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def incr(stat: str, count: int = 1, *, tags: dict[str, str] | None = None, per: str | None = None) -> None:
    """Count ``count`` under ``stat`` (with ``tags``) and, with ``per``, under ``stat.<per>`` too."""
    if count <= 0:
        return
    try:
        stats = _stats()
        stats.incr(stat, count, tags=tags or {})
        if per:
            stats.incr(f"{stat}.{_safe(per)}", count, tags=tags or {})
    except Exception:
        log.warning("could not emit metric %s", stat, exc_info=True)


def rows(obj: str, *, sent: int, rejected: int) -> None:
    """Rows Connectif confirmed and rows set aside (ours or Connectif's) in one run of ``obj``."""
    incr(ROWS_SENT, sent, tags={"object": obj}, per=obj)
    incr(ROWS_REJECTED, rejected, tags={"object": obj}, per=obj)


def api_request(method: str) -> None:
    incr(API_REQUESTS, 1, tags={"method": method})


def rate_limited() -> None:
    """Connectif answered 429 Too Many Requests."""
    incr(RATE_LIMITED, 1)


def rate_limit_wait(seconds: float | None) -> None:
    """Time spent waiting for a token of the shared rate-limit bucket (a timer, in milliseconds)."""
    if not isinstance(seconds, int | float) or seconds <= 0:
        return
    try:
        _stats().timing(RATE_LIMIT_WAIT, seconds * 1000.0, tags={})
    except Exception:
        log.warning("could not emit metric %s", RATE_LIMIT_WAIT, exc_info=True)


def guardrail_hold(obj: str, rules: list[str]) -> None:
    incr(GUARDRAIL_HOLDS, 1, tags={"object": obj, "rules": ",".join(rules)}, per=obj)


def alert(kind: str, transition: str) -> None:
    incr(ALERTS, 1, tags={"kind": kind, "transition": transition}, per=kind)
