"""The demo keeps an eye on what it started: Airflow's components, the emulator and the database server.

``airflow standalone`` does not restart a scheduler, triggerer or DAG processor that died: queued runs then
never start and only the UI's health badge turns red. The watchdog polls ``/api/v2/monitor/health``, the
emulator's ``/_emulator/health`` and the embedded PostgreSQL, and says loudly what is down, once when it goes
down and once when it is back. A component counts as down only after ``grace`` seconds of bad answers: on a
busy machine a heartbeat may be a few seconds late without anything being wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

AIRFLOW_PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


@dataclass
class Watchdog:
    """``check()`` returns the components down for longer than ``grace`` seconds (and prints changes)."""

    airflow_url: str
    emulator_url: str | None = None
    database_alive: Callable[[], bool] | None = None
    grace: float = 60.0
    say: Callable[[str], None] = print
    clock: Callable[[], float] = time.monotonic
    http_get: Callable[[str], Any] = field(default=lambda url: httpx.get(url, timeout=20))
    _bad_since: dict[str, float] = field(default_factory=dict)
    _reported: dict[str, str] = field(default_factory=dict)

    def probe(self) -> dict[str, str | None]:
        """Each component -> ``None`` when healthy, else what is wrong (one poll, no grace)."""
        out: dict[str, str | None] = {}
        try:
            resp = self.http_get(f"{self.airflow_url}/api/v2/monitor/health")
            health = resp.json() if resp.status_code == 200 else None
            api_problem = None if health is not None else f"HTTP {resp.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            health, api_problem = None, f"not answering ({type(exc).__name__})"
        out["api-server"] = api_problem
        for part in AIRFLOW_PARTS:
            if health is None:
                continue  # unknown while the API server does not answer
            info = health.get(part) or {}
            status = info.get("status")
            if status == "healthy":
                out[part] = None
            else:
                beat = info.get("latest_scheduler_heartbeat") or info.get("latest_triggerer_heartbeat")
                beat = beat or info.get("latest_dag_processor_heartbeat")
                out[part] = f"{status or 'no status'}" + (f" (latest heartbeat {beat})" if beat else " (no heartbeat)")
        if self.emulator_url:
            try:
                resp = self.http_get(f"{self.emulator_url}/_emulator/health")
                out["emulator"] = None if resp.status_code == 200 else f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                out["emulator"] = f"not answering ({type(exc).__name__})"
        if self.database_alive is not None:
            out["postgresql"] = None if self.database_alive() else "the server is not running"
        return out

    def check(self) -> dict[str, str]:
        """Components down for longer than the grace period -> why. Prints each change loudly."""
        now = self.clock()
        down: dict[str, str] = {}
        for part, problem in self.probe().items():
            if problem is None:
                self._bad_since.pop(part, None)
                if part in self._reported:
                    del self._reported[part]
                    self.say(f"✓ {part} is healthy again")
                continue
            since = self._bad_since.setdefault(part, now)
            if now - since < self.grace:
                continue
            down[part] = problem
            if part not in self._reported:
                self._reported[part] = problem
                self.say("")
                self.say("!" * 100)
                self.say(f"✗ {part.upper()} IS DOWN: {problem}, for {now - since:.0f}s.")
                self.say(f"  {CONSEQUENCE.get(part, '')}")
                self.say("!" * 100)
        return down


CONSEQUENCE = {
    "scheduler": "No run or task will start. `airflow standalone` does not restart it: "
    "see .demo/airflow/standalone.log, then Ctrl-C and run `make demo` again.",
    "triggerer": "Deferred tasks (imports, exports) will wait forever. See .demo/airflow/standalone.log.",
    "dag_processor": "DAG files are no longer parsed. See .demo/airflow/standalone.log.",
    "metadatabase": "Airflow cannot reach its database (the embedded PostgreSQL at .demo/pg).",
    "api-server": "The UI and the REST API do not answer. See .demo/airflow/standalone.log.",
    "emulator": "Tasks calling Connectif will fail and retry. See .demo/logs/emulator.log.",
    "postgresql": "Airflow, the ERP and the state store are unreachable. See .demo/pg/server.log.",
}
