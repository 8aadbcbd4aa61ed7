"""A small client for the Airflow 3 public REST API (``/api/v2``) with the simple auth manager's JWT login."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import httpx

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: Tries of a GET that times out or loses its connection (writes are never sent twice).
GET_ATTEMPTS = 3


class AirflowAPIError(RuntimeError):
    """An answer of the Airflow API that the caller cannot work with."""


class AirflowClient:
    """Talks to one Airflow API server; logs in with ``/auth/token`` and retries once on an expired token."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------------
    def _login(self) -> str:
        resp = self._http.post("/auth/token", json={"username": self._username, "password": self._password})
        if resp.status_code not in (200, 201):
            raise AirflowAPIError(f"login as {self._username!r} failed: HTTP {resp.status_code} {resp.text[:200]}")
        token: str = resp.json()["access_token"]
        return token

    def _request(
        self, method: str, path: str, *, headers_extra: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        relogged = False
        transport_tries = 0
        while True:
            if self._token is None:
                self._token = self._login()
            headers = {"Authorization": f"Bearer {self._token}", **(headers_extra or {})}
            try:
                resp = self._http.request(method, f"/api/v2{path}", headers=headers, **kwargs)
            except httpx.TransportError:
                # A busy machine can make the API server answer late: reads are retried, never writes.
                transport_tries += 1
                if method != "GET" or transport_tries >= GET_ATTEMPTS:
                    raise
                time.sleep(2.0 * transport_tries)
                continue
            if resp.status_code == 401 and not relogged:
                relogged = True
                self._token = None
                continue
            return resp

    def _json(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        if resp.status_code not in ok:
            raise AirflowAPIError(f"{method} /api/v2{path}: HTTP {resp.status_code} {resp.text[:500]}")
        return resp.json()

    # -- endpoints ------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``/api/v2/monitor/health`` (needs no login)."""
        resp = self._http.get("/api/v2/monitor/health")
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def dags(self, prefix: str = "") -> list[dict[str, Any]]:
        params = {"limit": 100}
        if prefix:
            params["dag_id_pattern"] = prefix  # type: ignore[assignment]
        result: list[dict[str, Any]] = self._json("GET", "/dags", params=params)["dags"]
        return [d for d in result if d["dag_id"].startswith(prefix)]

    def import_errors(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/importErrors", params={"limit": 100})["import_errors"]
        return result

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._json("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(
        self,
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        logical_date: datetime | None = None,
        data_interval: tuple[datetime, datetime] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None}
        if conf:
            body["conf"] = conf
        if data_interval:
            body["data_interval_start"] = data_interval[0].isoformat()
            body["data_interval_end"] = data_interval[1].isoformat()
        if note:
            body["note"] = note
        result: dict[str, Any] = self._json("POST", f"/dags/{dag_id}/dagRuns", ok=(200, 201), json=body)
        return result

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return result

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(
            "GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "-run_after"}
        )["dag_runs"]
        return result

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        )["task_instances"]
        return result

    def task_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of one task instance (the current one and those kept in its history), oldest first."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        result: list[dict[str, Any]] = self._json("GET", path)["task_instances"]
        return sorted(result, key=lambda t: t.get("try_number") or 0)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> list[Any]:
        """The log of one try as Airflow's structured entries (dicts with ``event``, ``level``...) or lines."""
        resp = self._request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true", "map_index": map_index},
            headers_extra={"Accept": "application/json"},
        )
        if resp.status_code == 404:
            return []
        if resp.status_code != 200:
            raise AirflowAPIError(f"log of {dag_id}/{run_id}/{task_id} try {try_number}: HTTP {resp.status_code}")
        content = resp.json().get("content")
        return list(content) if isinstance(content, list) else [] if content is None else str(content).splitlines()

    def variable(self, key: str) -> str | None:
        resp = self._request("GET", f"/variables/{key}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise AirflowAPIError(f"GET /api/v2/variables/{key}: HTTP {resp.status_code} {resp.text[:300]}")
        value: str = resp.json()["value"]
        return value

    def create_variable(self, key: str, value: str, description: str | None = None) -> None:
        self._json("POST", "/variables", ok=(200, 201), json={"key": key, "value": value, "description": description})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The XCom value (JSON-decoded), or ``None`` when the task pushed nothing under ``key``."""
        resp = self._request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise AirflowAPIError(f"XCom {dag_id}/{run_id}/{task_id}/{key}: HTTP {resp.status_code} {resp.text}")
        value = resp.json()["value"]
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float, poll: float = 3.0) -> dict[str, Any]:
        """Poll a run until it is ``success`` or ``failed``; raises ``TimeoutError`` with its last state."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)
