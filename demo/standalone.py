"""Boot ``airflow standalone`` on this repo's ``dags/`` and ``plugins/`` in a home of its own.

Used by ``make demo`` and by the test that drives the scheduler, worker and triggerer for real. Every port
Airflow opens is chosen here (free ports unless given), so several instances can run side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from demo.airflow_api import AirflowClient
from demo.processes import MARKER_VAR, ManagedProcess
from localdb.server import free_port

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


class StartupError(RuntimeError):
    """Airflow did not come up; the message carries the end of its log."""


class AirflowStandalone:
    """One ``airflow standalone`` (scheduler, DAG processor, API server, triggerer) and its CLI."""

    def __init__(
        self,
        home: Path,
        *,
        marker: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        dags_folder: Path = REPO / "dags",
        plugins_folder: Path = REPO / "plugins",
        parallelism: int = 8,
        database_url: str | None = None,
    ) -> None:
        """``database_url``: the metadata database (SQLAlchemy URL); ``None`` keeps Airflow's SQLite file in
        ``home``, which refuses backfills under concurrent access: use PostgreSQL (see ``localdb.postgres``)."""
        self.home = home
        self.host = host
        self.port = port or free_port(host)
        self.marker = marker
        self.log_path = home / "standalone.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__API__HOST": host,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": f"http://{host}:{self.port}",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port(host)),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port(host)),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                MARKER_VAR: marker,
            }
        )
        if database_url is not None:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url
        env.update(extra_env or {})
        self.env = env
        self._proc: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- preparation through the CLI ------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 300) -> str:
        """Run ``airflow <args>`` in this home; raises with the command's output when it fails."""
        result = subprocess.run(
            [str(VENV_BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise StartupError(
                f"`airflow {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def prepare(
        self, *, pools_file: Path | None = None, connections: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Migrate the metadata DB, import the pools and create/overwrite the connections."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        if pools_file is not None:
            self.cli("pools", "import", str(pools_file))
        if connections:
            with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.home, delete=False) as fh:
                json.dump(connections, fh)
                path = Path(fh.name)
            try:
                self.cli("connections", "import", "--overwrite", str(path))
            finally:
                path.unlink()  # it holds an API key

    # -- running ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._proc = ManagedProcess(
            "airflow-standalone",
            [str(VENV_BIN / "airflow"), "standalone"],
            env=self.env,
            log_path=self.log_path,
            cwd=self.home,
        )
        self._proc.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._proc is not None:
            self._proc.stop(timeout=timeout)

    def check_alive(self) -> None:
        if self._proc is None or not self._proc.alive():
            code = self._proc.returncode() if self._proc else None
            tail = self._proc.log_tail() if self._proc else ""
            raise StartupError(f"airflow standalone exited ({code}); end of {self.log_path}:\n{tail}")

    def wait_ready(self, timeout: float = 240.0) -> None:
        """Wait until the API server answers and the scheduler, triggerer and DAG processor are healthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        with AirflowClient(self.url, "", "", timeout=5) as anon:
            while time.monotonic() < deadline:
                self.check_alive()
                with contextlib.suppress(Exception):
                    last = anon.health()
                    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
                    if all((last.get(p) or {}).get("status") == "healthy" for p in parts):
                        return
                time.sleep(1)
        tail = self._proc.log_tail() if self._proc else ""
        raise StartupError(f"Airflow not healthy after {timeout:.0f}s (last health: {last}); log:\n{tail}")

    def admin_password(self, timeout: float = 60.0) -> str:
        """The password ``airflow standalone`` generated for ``admin`` (simple auth manager)."""
        path = self.home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                password: str = json.loads(path.read_text())["admin"]
                return password
            self.check_alive()
            time.sleep(0.5)
        raise StartupError(f"{path} was not written within {timeout:.0f}s")

    def client(self) -> AirflowClient:
        return AirflowClient(self.url, "admin", self.admin_password())

    def wait_for_dags(self, client: AirflowClient, dag_ids: Iterable[str], timeout: float = 180.0) -> None:
        """Wait until the DAG processor has registered every DAG; fail at once on an import error."""
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            errors = client.import_errors()
            if errors:
                text = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise StartupError(f"DAG import errors:\n{text}")
            seen = {d["dag_id"] for d in client.dags()}
            if wanted <= seen:
                return
            time.sleep(2)
        raise StartupError(f"DAGs not registered after {timeout:.0f}s: {sorted(wanted - seen)}")
