"""Injected faults and counters (contract section 11): 5xx, dropped connections, slow answers, 429 storms,
imports ending in ``error``; and the rate limiter under many concurrent clients."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from emulator.testing import RunningEmulator
from tests.fixtures.emulator import upload_csv


def get_imports(emu: RunningEmulator, timeout: float = 10) -> httpx.Response:
    return emu.anon.get(emu.url("/imports"), headers=emu.headers, timeout=timeout)


def test_error_rate_answers_5xx_json(emulator: RunningEmulator) -> None:
    emulator.admin.faults(error_rate=1.0, error_status=502)
    response = get_imports(emulator)
    assert response.status_code == 502 and response.json()["status"] == 502
    emulator.admin.faults(error_rate=0.5, seed=7)
    codes = [get_imports(emulator).status_code for _ in range(40)]
    assert 5 < codes.count(503) < 35 and codes.count(200) == 40 - codes.count(503)
    stats = emulator.admin.stats()
    assert stats["faults"]["error"] == 1 + codes.count(503)
    assert stats["statuses"]["503"] == codes.count(503)


def test_admin_paths_never_fault(emulator: RunningEmulator) -> None:
    emulator.admin.faults(error_rate=1.0, drop_rate=1.0)
    assert emulator.admin.stats()["totalRequests"] == 0


def test_dropped_connection(emulator: RunningEmulator) -> None:
    emulator.admin.faults(drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        get_imports(emulator)
    assert emulator.admin.stats()["faults"]["drop"] == 1


def test_dropped_after_processing_loses_only_the_answer(emulator: RunningEmulator) -> None:
    emulator.admin.faults(drop_rate=1.0, drop_after_processing=True)
    with pytest.raises(httpx.TransportError):
        upload_csv(emulator, "_email\nann@example.com\n")
    emulator.admin.faults()
    (job,) = emulator.admin.imports()
    emulator.admin.wait_import(job["id"])
    assert [c["_email"] for c in emulator.admin.contacts()] == ["ann@example.com"]


def test_slow_answers(emulator: RunningEmulator) -> None:
    emulator.admin.faults(slow_rate=1.0, slow_seconds=0.6)
    started = time.monotonic()
    assert get_imports(emulator).status_code == 200
    assert time.monotonic() - started >= 0.6
    with pytest.raises(httpx.ReadTimeout):
        get_imports(emulator, timeout=0.2)
    assert emulator.admin.stats()["faults"]["slow"] == 2
    time.sleep(0.6)  # let the abandoned request finish before the next test resets the counters


def test_429_storm(emulator: RunningEmulator) -> None:
    emulator.admin.faults(storm_seconds=0.8)
    stormy = get_imports(emulator)
    assert stormy.status_code == 429 and "Retry-After" in stormy.headers
    assert stormy.json()["status"] == 429
    time.sleep(0.9)
    assert get_imports(emulator).status_code == 200
    assert emulator.admin.stats()["rateLimited"] == 1


def test_import_ending_in_error(emulator: RunningEmulator) -> None:
    emulator.admin.faults(fail_next_imports=1)
    content = "_email\n" + "".join(f"u{i}@example.com\n" for i in range(10))
    failed = emulator.admin.wait_import(upload_csv(emulator, content).json()["id"])
    assert failed["status"] == "error" and failed["success"] < 10 and failed["finishedAt"]
    ok = emulator.admin.wait_import(upload_csv(emulator, content).json()["id"])
    assert ok["status"] == "finished" and ok["success"] == 10
    assert emulator.admin.stats()["faults"]["import_error"] == 1
    assert emulator.anon.delete(emulator.url(f"/imports/{failed['id']}"), headers=emulator.headers).status_code == 204


def test_import_error_rate(emulator: RunningEmulator) -> None:
    emulator.admin.faults(import_error_rate=1.0)
    job = emulator.admin.wait_import(upload_csv(emulator, "_email\na@example.com\n").json()["id"])
    assert job["status"] == "error"


def test_faults_are_validated(emulator: RunningEmulator) -> None:
    response = emulator.anon.put(emulator.url("/_emulator/faults"), json={"error_rate": 2})
    assert response.status_code == 422
    response = emulator.anon.put(emulator.url("/_emulator/faults"), json={"unknown": 1})
    assert response.status_code == 422
    response = emulator.anon.patch(emulator.url("/_emulator/settings"), json={"rate_limit": 0})
    assert response.status_code == 422


def test_concurrent_clients_never_exceed_the_limit(emulator: RunningEmulator) -> None:
    emulator.admin.configure(rate_limit=25, rate_limit_window_s=60)

    def hit(_: int) -> int:
        return get_imports(emulator, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(hit, range(80)))
    assert codes.count(200) == 25 and codes.count(429) == 55
    stats = emulator.admin.stats()
    assert stats["maxAllowedInWindow"] == 25 and stats["maxRequestsInWindow"] == 80
    assert stats["rateLimited"] == 55 and stats["requests"]["GET /imports"] == 80


def test_concurrent_uploads_respect_the_queue_limit(emulator: RunningEmulator) -> None:
    emulator.admin.configure(import_rows_per_s=0.5)
    body = "_email\n" + "".join(f"u{i}@example.com\n" for i in range(20))

    def send(_: int) -> int:
        return upload_csv(emulator, body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(send, range(16)))
    assert codes.count(201) == 10 and codes.count(400) == 6
    assert emulator.admin.stats()["maxQueuedImports"] == 10


def test_requests_are_counted_per_endpoint(emulator: RunningEmulator) -> None:
    get_imports(emulator)
    emulator.anon.get(emulator.url("/imports/abc"), headers=emulator.headers)
    emulator.anon.get(emulator.url("/imports/abc"))
    stats = emulator.admin.stats()
    assert stats["requests"] == {"GET /imports": 1, "GET /imports/{import_id}": 2}
    assert stats["statuses"] == {"200": 1, "404": 1, "401": 1}
    emulator.admin.reset_stats()
    assert emulator.admin.stats()["totalRequests"] == 0
