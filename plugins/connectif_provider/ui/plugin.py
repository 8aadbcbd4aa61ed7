"""The Airflow plugin object: the monitoring app at ``/connectif``, its page in the navigation, the run tab.

Registered through the ``airflow.plugins`` entry point of the distribution (``pyproject.toml``), so every
component that installs the project has it. ``plugins/.airflowignore`` keeps Airflow's plugins-folder loader
away from ``connectif_provider`` (it would import these files a second time under other module names and
report the plugin as "already registered").
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from connectif_provider.deadlines import QueuedPlusVariable
from connectif_provider.links import NAV_ROUTE, RUN_TAB_ROUTE, URL_PREFIX, ConnectifRunTabLink
from connectif_provider.ui.app import app


class ConnectifUIPlugin(AirflowPlugin):
    """Monitoring pages of the Connectif syncs inside the Airflow UI."""

    name = "connectif"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Connectif sync monitoring"}]
    external_views = [
        {
            "name": "Connectif",
            "href": f"{URL_PREFIX}/",
            "icon": f"{URL_PREFIX}/static/connectif.svg",
            "url_route": NAV_ROUTE,
            "destination": "nav",
        },
        {
            "name": "Connectif sync",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "icon": f"{URL_PREFIX}/static/connectif.svg",
            "url_route": RUN_TAB_ROUTE,
            "destination": "dag_run",
        },
    ]
    operator_extra_links = [ConnectifRunTabLink()]
    # The run deadline the scheduler reads from a Variable when it creates a run (connectif_provider.deadlines).
    deadline_references = [QueuedPlusVariable]
