"""The installed distribution exposes the four packages and registers the provider with Airflow."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path


def test_packages_import_from_the_repo_layout() -> None:
    import connectif_provider
    import connectif_sync
    import emulator
    import sample_erp

    assert connectif_provider.__file__.endswith("plugins/connectif_provider/__init__.py")
    assert connectif_sync.__file__.endswith("include/connectif_sync/__init__.py")
    assert emulator.__file__.endswith("emulator/__init__.py")
    assert sample_erp.__file__.endswith("sample_erp/__init__.py")
    assert not hasattr(connectif_sync, "generate_sample_erp"), "the generator is not part of the sync library"


def test_provider_entry_point_declares_connectif_connection_type() -> None:
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("connectif_provider")]
    assert len(eps) == 1
    info = eps[0].load()()
    types = {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]}
    assert types == {"connectif": "connectif_provider.hooks.connectif.ConnectifHook"}


def test_ui_plugin_is_declared_and_airflow_loads_it_once(tmp_path: Path) -> None:
    """The plugin comes from the ``airflow.plugins`` entry point only: the plugins folder (this repo's
    ``plugins/``) must not load ``connectif_provider`` a second time (``plugins/.airflowignore``)."""
    import json
    import os
    import subprocess
    import sys
    import tomllib

    from tests.fixtures.plugin import ENTRY_POINT, plugin_env

    repo = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["entry-points"]["airflow.plugins"]
    assert declared == {"connectif": ENTRY_POINT}
    script = (
        "import json; from airflow import plugins_manager as m; plugins, errors = m._get_plugins(); "
        "ui = [p for p in plugins if p.name == 'connectif']; "
        "print(json.dumps({'names': [p.name for p in plugins], 'errors': errors, "
        "'apps': [a['url_prefix'] for p in ui for a in p.fastapi_apps], "
        "'views': [(v['destination'], v['href']) for p in ui for v in p.external_views]}))"
    )
    env = {**os.environ, **plugin_env(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["names"].count("connectif") == 1 and found["errors"] == {}, found
    assert found["apps"] == ["/connectif"]
    assert found["views"] == [["nav", "/connectif/"], ["dag_run", "/connectif/runs/{DAG_ID}/{RUN_ID}"]]
