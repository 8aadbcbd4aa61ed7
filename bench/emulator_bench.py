"""Benchmark of the Connectif emulator: is it ever the bottleneck of what it measures?

Run: ``.venv/bin/python bench/emulator_bench.py`` (or ``make bench-emulator``). It starts the emulator as a
subprocess with import speed 0 (as fast as possible) and the rate limit raised through its settings, then:

1. uploads a 60 MB file and checks the 413 while watching the emulator's peak memory (VmHWM), which must
   not grow by the size of the upload;
2. uploads a contacts CSV just under 50 MB and times the upload (until 201) and the import (until
   ``finished``, polled every 0.25 s); the baseline is one plain ``csv.reader`` pass over the same file in
   this process, so the ratio says how far the import is from "just reading the file"; then imports the
   same file again (every row now updates a contact) while one client polls ``GET /imports/{id}`` without
   pause: requests/s and latency while an import keeps a core busy;
3. measures requests/s of ``GET /imports/{id}`` (auth + rate limiter + SQLite read), with 1 and 8 clients;
   the baseline is ``GET /_emulator/health`` (no auth, no limiter) in the same run.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emulator.testing import RunningEmulator, start_emulator

FORM = {"type": "contacts", "delimiter": ",", "overrideExisting": "true", "updateOnlyEmptyFields": "false"}


def write_contacts(path: Path, target_bytes: int) -> int:
    """A realistic contacts file of about ``target_bytes``; returns its number of rows."""
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            ["_email", "_name", "_surname", "_birthdate", "_points", "_newsletterSubscriptionStatus", "city"]
        )
        while handle.tell() < target_bytes - 200:
            writer.writerow(
                [
                    f"customer.{rows}@example.com",
                    f"Name{rows % 977}",
                    f"Surname{rows % 1553}",
                    f"19{50 + rows % 50}-{1 + rows % 12:02d}-{1 + rows % 28:02d}",
                    rows % 5000,
                    ("subscribed", "unsubscribed", "none")[rows % 3],
                    ("Madrid", "Barcelona", "Valencia", "Sevilla")[rows % 4],
                ]
            )
            rows += 1
    return rows


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def upload(emu: RunningEmulator, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return emu.http.post("/imports", data=FORM, files={"file": ("contacts.csv", handle, "text/csv")}, timeout=600)


def timed_import(emu: RunningEmulator, path: Path, rows: int, pause: float) -> tuple[str, float, float, list[float]]:
    """Upload and poll ``GET /imports/{id}`` until finished: (id, upload s, processing s, sorted latencies)."""
    started = time.perf_counter()
    response = upload(emu, path)
    uploaded = time.perf_counter()
    assert response.status_code == 201, response.text
    import_id = str(response.json()["id"])
    latencies: list[float] = []
    with httpx.Client(base_url=emu.base_url, headers=emu.headers, timeout=60) as client:
        while True:
            asked = time.perf_counter()
            job = client.get(f"/imports/{import_id}").json()
            latencies.append(time.perf_counter() - asked)
            if job["status"] not in ("queued", "inProgress"):
                break
            time.sleep(pause)
    assert job["status"] == "finished" and job["success"] == rows, job
    return import_id, uploaded - started, time.perf_counter() - uploaded, sorted(latencies)


def csv_baseline(path: Path) -> float:
    started = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as handle:
        for _row in csv.reader(handle):
            pass
    return time.perf_counter() - started


def throughput(make_request: Callable[[httpx.Client], int], clients: int, per_client: int) -> tuple[float, int]:
    """Requests per second over ``clients`` threads, each with its own connection; and the non-200 count."""
    failures = [0]
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(per_client):
                if make_request(client) != 200:
                    with lock:
                        failures[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * per_client / (time.perf_counter() - started), failures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=49.5, help="size of the import file (default 49.5)")
    parser.add_argument("--requests", type=int, default=1500, help="requests per client in the throughput runs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emulator-bench-"))
    big = work / "contacts.csv"
    rows = write_contacts(big, int(args.megabytes * 1_000_000))
    size_mb = big.stat().st_size / 1_000_000
    too_big = work / "too-big.csv"
    write_contacts(too_big, 60_000_000)
    results: list[tuple[str, str]] = []
    with start_emulator(import_rows_per_s=0, rate_limit=10_000_000, rate_limit_window_s=60) as emu:
        pid = emu.process.pid
        rss_start = peak_rss_mb(pid)
        refused = upload(emu, too_big)
        assert refused.status_code == 413, refused.text
        rss_after_413 = peak_rss_mb(pid)
        # Import 1: new contacts, polled through the API every 0.25 s as a client would.
        import_id, upload_s, import_s, _latencies = timed_import(emu, big, rows, pause=0.25)
        baseline_s = csv_baseline(big)
        rss_after_import = peak_rss_mb(pid)
        # Import 2: the same file again (every row updates an existing contact) while one client polls
        # without pause: how the API answers while an import keeps a core busy.
        _second_id, _upload2_s, update_s, latencies = timed_import(emu, big, rows, pause=0.0)
        during = len(latencies) / update_s
        p95_ms = latencies[int(len(latencies) * 0.95)] * 1000
        max_ms = latencies[-1] * 1000

        url = emu.url(f"/imports/{import_id}")
        health = emu.url("/_emulator/health")
        headers = emu.headers
        api_1, fail_1 = throughput(lambda c: c.get(url, headers=headers).status_code, 1, args.requests)
        api_8, fail_8 = throughput(lambda c: c.get(url, headers=headers).status_code, 8, args.requests // 4)
        base_1, _ = throughput(lambda c: c.get(health).status_code, 1, args.requests)
        base_8, _ = throughput(lambda c: c.get(health).status_code, 8, args.requests // 4)
        stats = emu.admin.stats()
    results += [
        ("import file", f"{size_mb:.1f} MB, {rows:,} contacts"),
        ("upload until 201 (includes row count and header check)", f"{upload_s:.2f} s"),
        ("import processing until finished (new contacts)", f"{import_s:.2f} s ({rows / import_s:,.0f} rows/s)"),
        ("baseline: one csv.reader pass over the file", f"{baseline_s:.2f} s"),
        ("ratio import processing / baseline", f"{import_s / baseline_s:.1f}x"),
        ("same file again (every row an update), polled without pause", f"{update_s:.2f} s"),
        (
            "GET /imports/{id} by that one client while the update import runs",
            f"{during:,.0f} req/s, p95 {p95_ms:.0f} ms, max {max_ms:.0f} ms",
        ),
        (
            "emulator peak RSS: at start / after a 60 MB upload refused with 413 / after the import (data in memory)",
            f"{rss_start:.0f} / {rss_after_413:.0f} / {rss_after_import:.0f} MB",
        ),
        ("GET /imports/{id}, 1 client", f"{api_1:,.0f} req/s ({fail_1} failures)"),
        ("GET /imports/{id}, 8 clients", f"{api_8:,.0f} req/s ({fail_8} failures)"),
        ("baseline GET /_emulator/health, 1 / 8 clients", f"{base_1:,.0f} / {base_8:,.0f} req/s"),
        ("ratio API / baseline, 1 / 8 clients", f"{api_1 / base_1:.2f} / {api_8 / base_8:.2f}"),
        ("API req/s (8 clients) vs the account limit (100/min)", f"{api_8 / (100 / 60):,.0f}x"),
        ("requests counted by the emulator", f"{stats['totalRequests']:,}"),
    ]
    for path in (big, too_big):
        path.unlink()
    work.rmdir()
    print("| measure | value |\n|---|---|")
    for name, value in results:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
