"""The extra link on Connectif import tasks: the "Connectif sync" tab of the task's DAG run.

The worker computes the link when the task ends and stores it as an XCom; the UI shows it as a button on the
task. It points at the tab the UI plugin (:mod:`connectif_provider.ui`) adds to every DAG run, so a user who
looks at one import lands on the whole run's counts, reasons and imports.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

#: ``url_route`` of the run tab (the UI serves it at ``/dags/{dag_id}/runs/{run_id}/plugin/<route>``).
RUN_TAB_ROUTE = "connectif-sync"
#: ``url_route`` of the Connectif page in the navigation (the UI serves it at ``/plugin/<route>``).
NAV_ROUTE = "connectif"
#: Where the API server mounts the monitoring app.
URL_PREFIX = "/connectif"


def run_tab_url(dag_id: str, run_id: str, base_url: str = "") -> str:
    """Where the UI shows the "Connectif sync" tab of one DAG run (relative unless ``base_url`` is given)."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/plugin/{RUN_TAB_ROUTE}"


def _base_url() -> str:
    try:
        from airflow.sdk.configuration import conf

        return str(conf.get("api", "base_url", fallback="") or "")
    except Exception:  # a relative link still works from the UI
        return ""


class ConnectifRunTabLink(BaseOperatorLink):
    """Button "Connectif sync" on an import task: opens its run's tab in the Connectif UI plugin."""

    name = "Connectif sync"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return run_tab_url(str(ti_key.dag_id), str(ti_key.run_id), _base_url())
