"""The provider's metrics go through Airflow's stats (StatsD / OpenTelemetry), under the names listed in ``ALL``."""

from __future__ import annotations

from typing import Any

import pytest

from connectif_provider import metrics


def test_metrics_go_through_airflow_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.observability import stats

    calls: list[tuple[str, str, Any, dict[str, Any]]] = []

    class Backend:
        def incr(self, stat: str, count: int = 1, rate: Any = None, tags: Any = None) -> None:
            calls.append(("incr", stat, count, tags or {}))

        def timing(self, stat: str, dt: Any, tags: Any = None) -> None:
            calls.append(("timing", stat, dt, tags or {}))

    stats.initialize(factory=Backend, export_legacy_names=False)
    try:
        metrics.rows("contacts", sent=120, rejected=7)
        metrics.api_request("POST")
        metrics.rate_limited()
        metrics.rate_limit_wait(1.5)
        metrics.rate_limit_wait(None)
    finally:
        stats.initialize(factory=stats.NoStatsLogger if hasattr(stats, "NoStatsLogger") else Backend,
                         export_legacy_names=True)  # fmt: skip
    names = [(kind, name, value) for kind, name, value, _ in calls]
    assert ("incr", "connectif.rows_sent", 120) in names and ("incr", "connectif.rows_sent.contacts", 120) in names
    assert ("incr", "connectif.rows_rejected.contacts", 7) in names
    assert ("incr", "connectif.api_requests", 1) in names and ("incr", "connectif.api_429", 1) in names
    assert ("timing", "connectif.rate_limit_wait_ms", 1500.0) in names
    assert all(name in metrics.ALL or name.rsplit(".", 1)[0] in metrics.ALL for _, name, _ in names)
