"""Run the emulator as a real uvicorn subprocess and drive it through its admin API (tests, benchmarks, demo).

    with start_emulator(rate_limit=1000) as emu:
        httpx.get(emu.url("/imports"), headers=emu.headers)
        emu.admin.contacts()

The subprocess is the same ``python -m emulator`` a user runs; it listens on a free port chosen by the
OS and is always stopped when the block ends, also on failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from emulator.state import generate_key

_LISTENING = re.compile(r"listening on (http://\S+)")


class EmulatorError(RuntimeError):
    """The emulator did not start, or an admin call failed."""


class EmulatorAdmin:
    """HTTP client of the ``/_emulator/`` admin endpoints (never counted, never rate limited)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/_emulator", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=json, params=params)
        if response.status_code >= 400:
            raise EmulatorError(f"{method} /_emulator{path} answered {response.status_code}: {response.text}")
        return response.json() if response.content else None

    @staticmethod
    def _account(account: str | None) -> dict[str, Any] | None:
        return {"account": account} if account else None

    # settings, faults, counters
    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def reset(self, **settings: Any) -> dict[str, Any]:
        """Wipe data, restore start-up settings (then apply ``settings``), clear faults and counters."""
        result: dict[str, Any] = self._call("POST", "/reset", json=settings)
        return result

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings (see ``emulator.settings.Settings``; plus ``authorized_domains``)."""
        result: dict[str, Any] = self._call("PATCH", "/settings", json=settings)
        return result

    def settings(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/settings")
        return result

    def faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the injected faults (see ``emulator.settings.Faults``); no arguments clears them."""
        result: dict[str, Any] = self._call("PUT", "/faults", json=faults)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def reset_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/stats/reset")
        return result

    # accounts and keys
    def create_account(self, **account: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/accounts", json=account)
        return result

    def update_account(self, account_id: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/accounts/{account_id}", json=changes)
        return result

    def create_key(self, scopes: list[str] | None = None, blocked: bool = False, account_id: str = "default") -> str:
        body: dict[str, Any] = {"blocked": blocked, "accountId": account_id}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self._call("POST", "/keys", json=body)["key"])

    # stored data
    def contacts(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/contacts", params=self._account(account))
        return result

    def products(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/products", params=self._account(account))
        return result

    def purchases(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/purchases", params=self._account(account))
        return result

    def activities(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/activities", params=self._account(account))
        return result

    def coupon_sets(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/coupon-sets", params=self._account(account))
        return result

    def coupon_codes(self, set_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", f"/coupon-sets/{set_id}/codes")
        return result

    def imports(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/imports", params=self._account(account))
        return result

    def exports(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/exports", params=self._account(account))
        return result

    def workflows(self, account: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/workflows", params=self._account(account))
        return result

    # seeding
    def seed_contacts(self, contacts: list[dict[str, Any]], account: str | None = None) -> None:
        self._call("POST", "/contacts", json=contacts, params=self._account(account))

    def seed_products(self, products: list[dict[str, Any]], account: str | None = None) -> None:
        self._call("POST", "/products", json=products, params=self._account(account))

    def seed_activities(self, activities: list[dict[str, Any]], account: str | None = None) -> None:
        self._call("POST", "/activities", json=activities, params=self._account(account))

    def create_coupon_set(
        self,
        name: str = "Coupons",
        type: str = "multiple",
        code: str | None = None,
        codes: list[str] | None = None,
        account: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body = {"name": name, "type": type, "codes": codes or [], **extra}
        if code is not None:
            body["code"] = code
        result: dict[str, Any] = self._call("POST", "/coupon-sets", json=body, params=self._account(account))
        return result

    def assign_coupons(self, set_id: str, count: int) -> list[str]:
        return list(self._call("POST", f"/coupon-sets/{set_id}/assign", json={"count": count})["assigned"])

    def create_workflow(
        self,
        name: str = "Workflow",
        status: str = "active",
        coupon_set_ids: list[str] | None = None,
        account: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        body = {"name": name, "status": status, "couponSetIds": coupon_set_ids or [], **extra}
        result: dict[str, Any] = self._call("POST", "/workflows", json=body, params=self._account(account))
        return result

    def cancel_import(self, import_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/imports/{import_id}/cancel")
        return result

    def wait_import(self, import_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll (through admin, so no rate limit is spent) until the import leaves queued/inProgress."""
        deadline = time.monotonic() + timeout
        while True:
            for job in self.imports():
                if job["id"] == import_id and job["status"] not in ("queued", "inProgress"):
                    return job
            if time.monotonic() > deadline:
                raise EmulatorError(f"import {import_id} did not finish within {timeout} s")
            time.sleep(0.05)

    def wait_export(self, export_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for job in self.exports():
                if job["id"] == export_id and job["status"] not in ("queued", "inProgress"):
                    return job
            if time.monotonic() > deadline:
                raise EmulatorError(f"export {export_id} did not finish within {timeout} s")
            time.sleep(0.05)


@dataclass
class RunningEmulator:
    """A started emulator: where it listens, the default account's key, and its admin client."""

    base_url: str
    api_key: str
    admin: EmulatorAdmin
    process: subprocess.Popen[bytes]
    log_path: Path
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def http(self) -> httpx.Client:
        """A shared client with the default account's key and ``base_url`` set (``emu.http.get("/imports")``).

        Shared because creating an ``httpx.Client`` costs ~100 ms (it loads the CA bundle)."""
        if not self._clients:
            self._clients.append(httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60))
            self._clients.append(httpx.Client(timeout=60))
        return self._clients[0]

    @property
    def anon(self) -> httpx.Client:
        """A shared client without any key (pre-signed downloads, other keys passed per request)."""
        self.http  # noqa: B018 - creates both clients
        return self._clients[1]

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header of the default account."""
        return {"Authorization": f"apiKey {self.api_key}"}

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def log(self) -> str:
        """What the emulator process wrote so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def start_emulator(
    *,
    api_key: str | None = None,
    state_file: Path | str | None = None,
    authorized_domains: list[str] | None = None,
    speed: float | None = None,
    host: str = "127.0.0.1",
    startup_timeout: float = 60.0,
    extra_args: list[str] | None = None,
    **settings: Any,
) -> Iterator[RunningEmulator]:
    """Start ``python -m emulator`` on a free port; yield once it answers; always stop it afterwards.

    ``settings`` are applied through the admin API once it is up (names of ``emulator.settings.Settings``).
    """
    key = api_key or generate_key()
    command = [sys.executable, "-m", "emulator", "--host", host, "--port", "0", "--api-key", key]
    if state_file is not None:
        command += ["--state", str(state_file)]
    for domain in authorized_domains or []:
        command += ["--authorized-domain", domain]
    if speed is not None:
        command += ["--speed", str(speed)]
    command += extra_args or []
    log_dir = Path(tempfile.mkdtemp(prefix="connectif-emulator-log-"))
    log_path = log_dir / "emulator.log"
    repo_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    admin: EmulatorAdmin | None = None
    try:
        base_url = _wait_listening(process, log_path, startup_timeout)
        admin = EmulatorAdmin(base_url)
        _wait_healthy(admin, process, log_path, startup_timeout)
        if settings:
            admin.configure(**settings)
        running = RunningEmulator(base_url=base_url, api_key=key, admin=admin, process=process, log_path=log_path)
        try:
            yield running
        finally:
            running.close_clients()
    finally:
        if admin is not None:
            admin.close()
        _stop(process)
        shutil.rmtree(log_dir, ignore_errors=True)


def _wait_listening(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise EmulatorError(f"the emulator exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    raise EmulatorError(f"the emulator did not start within {timeout} s:\n{log_path.read_text()}")


def _wait_healthy(admin: EmulatorAdmin, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin.health()
            return
        except (httpx.HTTPError, EmulatorError):
            if process.poll() is not None:
                raise EmulatorError(f"the emulator exited with {process.returncode}:\n{log_path.read_text()}") from None
            time.sleep(0.05)
    raise EmulatorError(f"the emulator did not answer within {timeout} s:\n{log_path.read_text()}")
