"""Dry-run estimates take the connection's own shared budget, not a copy of the provider's default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectif_provider.models import DEFAULT_RATE_LIMIT_PER_MINUTE

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``connectif_dags.common`` as the DAG processor imports it (``dags/`` on the path)."""
    monkeypatch.syspath_prepend(str(DAGS))
    import connectif_dags.common

    return connectif_dags.common


def test_estimates_use_the_connections_rate_limit(common: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "connectif://:k%3As@api.connectif.cloud/?rate_limit_per_minute="
    monkeypatch.setenv("AIRFLOW_CONN_CX_SLOW", url + "30")
    monkeypatch.setenv("AIRFLOW_CONN_CONNECTIF_DEFAULT", url + "45")
    assert common.rate_limit_per_minute("cx_slow") == 30
    assert common.rate_limit_per_minute() == 45
    from connectif_sync.contract import RequestEstimate

    estimate = RequestEstimate.for_calls(90, common.rate_limit_per_minute()).as_dict()
    assert estimate == {"api_requests": 90, "expected_minutes": 2.0, "rate_limit_per_minute": 45}
    assert RequestEstimate.for_calls(90, common.rate_limit_per_minute("cx_slow")).expected_minutes == 3.0


def test_without_a_usable_connection_the_default_is_taken(common: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CX_NOKEY", "connectif://api.connectif.cloud/")
    assert common.rate_limit_per_minute("cx_nokey") == DEFAULT_RATE_LIMIT_PER_MINUTE
