"""Benchmark of the Connectif provider against the emulator, in one run (``make bench-provider``).

1. Requests spent per import while waiting. Imports queue behind each other at a slow processing
   speed; one ``ConnectifImportTrigger`` per import runs concurrently in one event loop (as in the
   triggerer). For each import: the wait, the GETs it cost, and GETs per poll interval. Baseline in the
   same run: a fixed-interval poller (one GET per interval, no back-off) over the same waits.
   Targets: never more than one request per poll interval, and fewer per interval as the wait grows.

2. The shared bucket under load. 4 worker processes call the API as fast as the bucket lets them for
   2 minutes against a 100/minute emulator limit, all sharing one bucket (90/minute, SQLite backend).
   Targets: at least 90% of the bucket's budget used, zero 429 answers from the emulator.
   Baseline in the same run (30 s): the same 4 processes, each with a private bucket of 90/minute (what
   per-process limiting gives): the emulator answers 429s.

Usage: ``python bench/provider_bench.py [--load-seconds 120] [--baseline-seconds 30] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="connectif-bench-airflow-"))
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def _connection(base_url: str, api_key: str, conn_id: str, **extra: Any) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {"conn_type": "connectif", "host": base_url, "password": api_key, "extra": extra}
    )


# -- part 1 -------------------------------------------------------------------------------------------------
def bench_polling(emu: Any, workdir: Path, poll_interval: float = 1.0, imports: int = 6) -> dict[str, Any]:
    from connectif_provider.hooks.connectif import ConnectifHook
    from connectif_provider.triggers.connectif import ConnectifImportTrigger

    rows, speed = 40, 8.0  # each import takes ~5 s, so the n-th waits ~5n s
    emu.admin.reset(import_rows_per_s=speed, rate_limit=1000)
    _connection(
        emu.base_url,
        emu.api_key,
        "bench_poll",
        rate_limit_per_minute=900,
        rate_limit_backend=f"sqlite:///{workdir / 'poll-bucket.db'}",
    )
    hook = ConnectifHook("bench_poll")
    ids = []
    for i in range(imports):
        path = workdir / f"chunk-{i}.csv"
        path.write_text("_email\n" + "".join(f"u{i}-{r}@example.com\n" for r in range(rows)), encoding="utf-8")
        ids.append(str(hook.create_import(path, "contacts")["id"]))
    ConnectifHook.request_counter.clear()
    started = time.monotonic()

    async def wait(import_id: str) -> float:
        trigger = ConnectifImportTrigger(
            import_ids=[import_id],
            connectif_conn_id="bench_poll",
            poll_interval=poll_interval,
            max_poll_interval=poll_interval * 8,
            deadline=time.time() + 600,
        )
        async for event in trigger.run():
            assert event.payload["status"] == "success", event.payload
        return time.monotonic() - started

    async def main() -> list[float]:
        return list(await asyncio.gather(*(wait(i) for i in ids)))

    waits = asyncio.run(main())
    results = []
    for import_id, waited in zip(ids, waits, strict=True):
        requests = ConnectifHook.request_counter.get(f"GET /imports/{import_id}", 0)
        intervals = waited / poll_interval
        fixed = int(waited // poll_interval) + 1  # the fixed-interval baseline over the same wait
        results.append(
            {
                "import_id": import_id,
                "wait_s": round(waited, 1),
                "requests": requests,
                "requests_per_poll_interval": round(requests / intervals, 3),
                "fixed_interval_baseline_requests": fixed,
                "saving_vs_baseline": round(1 - requests / fixed, 3),
            }
        )
    results.sort(key=lambda r: r["wait_s"])
    per_interval = [r["requests_per_poll_interval"] for r in results]
    half = len(per_interval) // 2
    shorter, longer = per_interval[:half], per_interval[half:]
    return {
        "poll_interval_s": poll_interval,
        "imports": results,
        "max_requests_per_poll_interval": max(per_interval),
        # the trend, not each step: when a queued import starts is seen up to one (grown) interval late
        "falls_as_wait_grows": sum(longer) / len(longer) < sum(shorter) / len(shorter)
        and per_interval[-1] < per_interval[0],
    }


# -- part 2 -------------------------------------------------------------------------------------------------
WORKER = """
import json, os, sys, threading, time
sys.path.insert(0, {repo!r})
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.exceptions import ConnectifError
hook = ConnectifHook("bench_load")
hook.get_settings().limiter().in_window()  # connect to the bucket before the clock starts
print("ready", flush=True)
start_at, end_at = (float(x) for x in sys.stdin.readline().split())
counts = {{"ok": 0, "failed": 0}}

def loop():
    while True:
        try:
            hook._request("GET", "/imports", params={{"limit": 1}})
            if time.time() <= end_at:
                counts["ok"] += 1
        except ConnectifError:
            counts["failed"] += 1

time.sleep(max(0.0, start_at - time.time()))
threading.Thread(target=loop, daemon=True).start()
time.sleep(max(0.0, end_at - time.time()))
# requests completed inside [start, end]; one still waiting for a token at the end is not counted
print(json.dumps({{**counts, "requests": counts["ok"] + counts["failed"]}}), flush=True)
os._exit(0)
"""


def bench_shared_bucket(emu: Any, workdir: Path, seconds: float, shared: bool, budget: int = 90) -> dict[str, Any]:
    emu.admin.reset(rate_limit=100, rate_limit_window_s=60)
    emu.admin.reset_stats()
    backend = f"sqlite:///{workdir / f'load-bucket-{uuid.uuid4().hex[:6]}.db'}"
    script = workdir / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)), encoding="utf-8")
    procs = []
    for n in range(4):
        env = dict(os.environ)
        extra = {"rate_limit_per_minute": budget, "rate_limit_backend": backend, "max_attempts": 3}
        extra["rate_limit_bucket"] = "bench-shared" if shared else f"bench-private-{n}"
        env["AIRFLOW_CONN_BENCH_LOAD"] = json.dumps(
            {"conn_type": "connectif", "host": emu.base_url, "password": emu.api_key, "extra": extra}
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:  # wait until every interpreter has imported Airflow and reached the bucket
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        start_at = time.time() + 1.0
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at} {start_at + seconds}\n")
            proc.stdin.flush()
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 600)
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stats = emu.admin.stats()
    sent = sum(o["requests"] for o in outputs)
    served_ok = sum(o["ok"] for o in outputs)
    budget_total = budget * seconds / 60.0 * (1 if shared else 4)
    return {
        "shared_bucket": shared,
        "seconds": seconds,
        "processes": 4,
        "bucket_budget_per_minute": budget if shared else f"{budget} per process",
        "server_limit_per_minute": 100,
        "requests_sent": sent,
        "requests_succeeded": served_ok,
        "rate_per_minute": round(sent / seconds * 60, 1),
        "budget_used": round(served_ok / budget_total, 3),
        "emulator_429s": stats["rateLimited"],
        "emulator_max_requests_in_window": stats["maxRequestsInWindow"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-seconds", type=float, default=120.0)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    from emulator.testing import start_emulator

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="connectif-provider-bench-") as tmp, start_emulator() as emu:
        workdir = Path(tmp)
        report["polling"] = bench_polling(emu, workdir)
        print(json.dumps(report["polling"], indent=2), flush=True)
        report["shared_bucket"] = bench_shared_bucket(emu, workdir, args.load_seconds, shared=True)
        print(json.dumps(report["shared_bucket"], indent=2), flush=True)
        report["private_buckets_baseline"] = bench_shared_bucket(emu, workdir, args.baseline_seconds, shared=False)
        print(json.dumps(report["private_buckets_baseline"], indent=2), flush=True)
    polling, shared = report["polling"], report["shared_bucket"]
    checks = {
        "at most one request per poll interval": polling["max_requests_per_poll_interval"] <= 1.0,
        "requests per interval fall as the wait grows": polling["falls_as_wait_grows"],
        "shared bucket uses >= 90% of its budget": shared["budget_used"] >= 0.9,
        "zero 429 from the emulator with the shared bucket": shared["emulator_429s"] == 0,
    }
    report["checks"] = checks
    print(json.dumps({"checks": checks}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
