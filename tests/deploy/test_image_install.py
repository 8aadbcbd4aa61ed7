"""The Dockerfile's project install, replayed without Docker.

The image installs the project from only what its ``COPY`` lines put in ``/opt/airflow/project`` with a
regular (non-editable) ``pip install``. The venv uses an editable install, which hides packaging mistakes
(package data left out of the wheel, a module outside the mapped packages). This test stages exactly the
copied files, builds the wheel as the image would, installs it into a private target and checks, from
there, what the triggerer and the workers rely on: the provider entry point and its ``connectif`` connection
type, the hook, the sync library's mapping files, the console scripts of the compose file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.compose_check import REPO, ComposeChecker

PROJECT_DIR = "/opt/airflow/project/"

PROBE = r"""
import importlib, importlib.metadata as md, importlib.resources as res, json, sys
target = sys.argv[1]
sys.path.insert(0, target)
dist = next(d for d in md.distributions(path=[target]) if d.metadata["Name"] == "airflow-connectif")
eps = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
info = next(ep for ep in dist.entry_points if ep.group == "apache_airflow_provider").load()()
hook_path = info["connection-types"][0]["hook-class-name"]
module, _, cls = hook_path.rpartition(".")
hook = getattr(importlib.import_module(module), cls)
mappings = sorted(p.name for p in (res.files("connectif_sync") / "mappings").iterdir())
print(json.dumps({
    "entry_points": {f"{g}:{n}": v for (g, n), v in eps.items()},
    "connection_types": [c["connection-type"] for c in info["connection-types"]],
    "hook_file": sys.modules[module].__file__,
    "hook_conn_type": hook.conn_type,
    "mappings": mappings,
    "emulator_main": importlib.util.find_spec("emulator.__main__").origin,
    "hash_accelerator": importlib.import_module("connectif_sync.hashing").ACCELERATED,
    "sqlite_hash": importlib.import_module("connectif_sync.extract").sqlite_hash_extension(),
}))
"""


def staged_project(tmp_path: Path) -> Path:
    """The files the Dockerfile copies into /opt/airflow/project, at the same relative places."""
    checker = ComposeChecker(REPO)
    info = checker.check_dockerfile(REPO / "Dockerfile", REPO)
    assert checker.report.problems == []
    stage = tmp_path / "project"
    copied = 0
    for target, source in info.copies:
        if not target.startswith(PROJECT_DIR):
            continue
        dest = stage / target[len(PROJECT_DIR) :]
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
        copied += 1
    assert copied, f"the Dockerfile copies nothing into {PROJECT_DIR}"
    return stage


@pytest.mark.timeout(600)
def test_image_install_of_the_project(tmp_path: Path) -> None:
    stage = staged_project(tmp_path)
    wheels = tmp_path / "wheels"
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "-q", str(stage), "-w", str(wheels)], capture_output=True, text=True, timeout=500
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("airflow_connectif-*.whl")
    install = subprocess.run(
        [*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(target)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])

    assert found["connection_types"] == ["connectif"]
    assert found["hook_conn_type"] == "connectif"
    assert found["hook_file"].startswith(str(target)), "the hook came from the repo, not from the installed wheel"
    assert found["emulator_main"].startswith(str(target))
    assert found["entry_points"]["console_scripts:connectif-sync"] == "connectif_sync.cli:main"
    shipped = {p.name for p in (REPO / "include" / "connectif_sync" / "mappings").iterdir() if p.is_file()}
    missing = shipped - set(found["mappings"])
    assert not missing, f"mapping files missing from the wheel: {missing}"
    if shutil.which("cc") or shutil.which("gcc"):  # the image installs gcc for it
        assert found["hash_accelerator"], "the wheel was built without the C row-hash accelerator"
        if Path("/usr/include/sqlite3ext.h").exists():  # the image installs libsqlite3-dev for it
            assert found["sqlite_hash"], "the wheel was built without the SQLite source-hash extension"
            assert found["sqlite_hash"].startswith(str(target))
