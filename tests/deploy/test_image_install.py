"""The distribution as users install it: the Dockerfile's project install, and ``pip install`` of the wheel.

The image installs the project from only what its ``COPY`` lines put in ``/opt/airflow/project`` with a
regular (non-editable) ``pip install``. The venv uses an editable install, which hides packaging mistakes
(package data left out of the wheel, a module outside the mapped packages). These tests stage exactly the
copied files and build the wheel as the image would, then:

- install it alone into a private target and check, from there, what the triggerer and the workers rely on:
  the provider entry point and its ``connectif`` connection type, the hook, the sync library's mapping
  files, the console scripts of the compose file, the C accelerators;
- install it with its declared dependencies into a clean venv (no system site-packages, no checkout on the
  path) next to Airflow, and check that Airflow finds the provider, its connection type and every plugin,
  and that every entry point the distribution declares resolves. Wheels come from a wheelhouse
  (``$CONNECTIF_WHEELHOUSE``, default ``~/.cache/airflow-connectif/wheelhouse``) that ``pip download``
  fills from PyPI when it can; the install itself is ``--no-index``, so a filled wheelhouse runs offline.
  Versions follow constraints.txt (the tested environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.compose_check import REPO, ComposeChecker

PROJECT_DIR = "/opt/airflow/project/"
AIRFLOW_VERSION = next(
    line.split("==", 1)[1].strip()
    for line in (REPO / "constraints.txt").read_text().splitlines()
    if line.startswith("apache-airflow==")
)
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]

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
    "sample_erp": importlib.util.find_spec("sample_erp").origin,
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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from the files the Dockerfile copies, as the image builds it."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    stage = staged_project(tmp_path)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [*PIP, "wheel", "--no-deps", "-q", str(stage), "-w", str(wheels)], capture_output=True, text=True, timeout=500
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (built,) = wheels.glob("airflow_connectif-*.whl")
    return built


@pytest.mark.timeout(600)
def test_image_install_of_the_project(tmp_path: Path, wheel: Path) -> None:
    target = tmp_path / "site"
    pip = PIP
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
    assert found["sample_erp"].startswith(str(target)), "the generator behind `connectif-sync sample-erp` is missing"
    assert found["entry_points"]["console_scripts:connectif-sync"] == "connectif_sync.cli:main"
    shipped = {p.name for p in (REPO / "include" / "connectif_sync" / "mappings").iterdir() if p.is_file()}
    missing = shipped - set(found["mappings"])
    assert not missing, f"mapping files missing from the wheel: {missing}"
    if shutil.which("cc") or shutil.which("gcc"):  # the image installs gcc for it
        assert found["hash_accelerator"], "the wheel was built without the C row-hash accelerator"
        if Path("/usr/include/sqlite3ext.h").exists():  # the image installs libsqlite3-dev for it
            assert found["sqlite_hash"], "the wheel was built without the SQLite source-hash extension"
            assert found["sqlite_hash"].startswith(str(target))


#: The extras installed next to Airflow.
EXTRAS = "postgres,redis,mysql,emulator"

VENV_PROBE = r"""
import importlib, importlib.metadata as md, json, os, sys
repo = os.path.realpath(sys.argv[1])
on_path = [p for p in sys.path if p and os.path.realpath(p).startswith(repo)]
dist = md.distribution("airflow-connectif")
entry_points = {}
for ep in dist.entry_points:
    try:
        obj = ep.load()
        where = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', ep.attr)}"
        entry_points[f"{ep.group}:{ep.name}"] = {"ok": True, "object": where}
    except Exception as exc:
        entry_points[f"{ep.group}:{ep.name}"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
providers = ProvidersManager().providers
hook = ProvidersManagerTaskRuntime().hooks.get("connectif")

from airflow import plugins_manager
from airflow.plugins_manager import AirflowPlugin
declared_plugins = {}
for ep in dist.entry_points:
    if ep.group == "airflow.plugins":
        plugin = ep.load()
        declared_plugins[ep.name] = {
            "is_airflow_plugin": isinstance(plugin, type) and issubclass(plugin, AirflowPlugin),
            "name": getattr(plugin, "name", None),
        }
loaded_plugins = {info["name"]: str(info.get("source")) for info in plugins_manager.get_plugin_info(["source"])}
import_errors = {k: str(v) for k, v in plugins_manager.get_import_errors().items()}

modules = {}
for name in ("connectif_provider", "connectif_sync", "emulator", "sample_erp", "connectif_provider.hooks.connectif"):
    modules[name] = importlib.import_module(name).__file__
print(json.dumps({
    "prefix": sys.prefix,
    "checkout_on_path": on_path,
    "dist_location": str(dist.locate_file("")),
    "requires": dist.requires or [],
    "entry_points": entry_points,
    "provider_version": providers["airflow-connectif"].version if "airflow-connectif" in providers else None,
    "hook": None if hook is None else {
        "class": hook.hook_class_name, "type": hook.connection_type, "package": hook.package_name
    },
    "declared_plugins": declared_plugins,
    "loaded_plugins": loaded_plugins,
    "import_errors": import_errors,
    "modules": modules,
}))
"""


def _wheelhouse() -> Path:
    return Path(os.environ.get("CONNECTIF_WHEELHOUSE") or Path.home() / ".cache" / "airflow-connectif" / "wheelhouse")


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell: no project checkout or venv of ours on any path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow_home")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO)))
    return env


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheel_installs_with_its_dependencies_next_to_airflow(tmp_path: Path, wheel: Path) -> None:
    env = _clean_env(tmp_path)
    venv = tmp_path / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300, env=env
    )
    assert made.returncode == 0, made.stderr[-3000:]
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    wanted = f"{wheel}[{EXTRAS}]"
    constraints = ["-c", str(REPO / "constraints.txt")]

    # Airflow and what the wheel declares, at the tested versions; files already there are not fetched again.
    house = _wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    fetch = subprocess.run(
        [*pip, "download", "-q", "-d", str(house), f"apache-airflow=={AIRFLOW_VERSION}", wanted, *constraints],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
        cwd=tmp_path,
    )
    for stale in house.glob("airflow_connectif-*"):  # our own wheel is always the one just built
        stale.unlink()
    offline = ["--no-index", "--find-links", str(house)]
    # --no-compile: no bytecode for Airflow's thousands of modules (most of the install's time); the probe
    # compiles what it imports.
    install = subprocess.run(
        [*pip, "install", "-q", "--no-compile", *offline, f"apache-airflow=={AIRFLOW_VERSION}", wanted, *constraints],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
        cwd=tmp_path,
    )
    assert install.returncode == 0, (
        f"pip install of the wheel failed:\n{install.stderr[-3000:]}\n"
        f"(pip download into {house} said: {fetch.stderr[-2000:] or 'ok'})"
    )
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert check.returncode == 0, f"broken requirements in the venv:\n{check.stdout}{check.stderr}"

    probe = subprocess.run(
        [str(python), "-c", VENV_PROBE, str(REPO)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])

    assert found["checkout_on_path"] == []
    venv_dir = os.path.realpath(venv)
    for name, file in found["modules"].items():
        assert os.path.realpath(file).startswith(venv_dir), f"{name} came from {file}, not from the installed wheel"
    assert found["requires"], "the wheel declares no dependencies"
    broken = {k: v["error"] for k, v in found["entry_points"].items() if not v["ok"]}
    assert not broken, f"entry points that do not resolve: {broken}"
    assert "apache_airflow_provider:provider_info" in found["entry_points"]
    assert found["provider_version"] is not None, "Airflow's ProvidersManager does not list airflow-connectif"
    assert found["hook"] == {
        "class": "connectif_provider.hooks.connectif.ConnectifHook",
        "type": "connectif",
        "package": "airflow-connectif",
    }
    for entry, plugin in found["declared_plugins"].items():
        assert plugin["is_airflow_plugin"], f"airflow.plugins entry point {entry} is not an AirflowPlugin"
        assert plugin["name"] in found["loaded_plugins"], f"Airflow did not load plugin {plugin['name']}"
    ours = {k: v for k, v in found["import_errors"].items() if "connectif" in k or "connectif" in v}
    assert not ours, f"plugin import errors: {ours}"

    # The console scripts work from the venv: the generator ships with the wheel (``connectif-sync sample-erp``).
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    sample = subprocess.run(
        [str(venv / "bin" / "connectif-sync"), "sample-erp", "--url", url, "--contacts", "20", "--products", "3",
         "--orders", "4", "--erasures", "0"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert json.loads(sample.stdout)["rows"]["customers"] == 20
    emulator_help = subprocess.run(
        [str(venv / "bin" / "connectif-emulator"), "--help"], capture_output=True, text=True, timeout=300, env=env
    )
    assert emulator_help.returncode == 0, emulator_help.stderr[-3000:]
