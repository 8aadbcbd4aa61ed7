"""Which purchases runs fire Connectif's purchase workflows (``triggerPurchaseEvent``)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType


@pytest.mark.parametrize(
    ("requested", "run_type", "expected"),
    [
        (None, DagRunType.BACKFILL, False),  # history never fires workflows unless asked
        (None, "backfill", False),
        (None, DagRunType.SCHEDULED, True),
        (None, DagRunType.MANUAL, True),
        (True, DagRunType.BACKFILL, True),  # asked explicitly in the backfill's conf
        (False, DagRunType.SCHEDULED, False),
        (False, DagRunType.MANUAL, False),
    ],
)
def test_fires_workflows(dagbag: Any, requested: bool | None, run_type: object, expected: bool) -> None:
    from connectif_dags.purchases import fires_workflows  # dags/ is on sys.path once the DAG bag is parsed

    assert fires_workflows(requested, run_type) is expected
