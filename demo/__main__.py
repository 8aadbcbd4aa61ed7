"""``make demo`` / ``python -m demo``: the whole pipeline on this machine, from nothing, in one command.

1. generates the sample ERP (SQLite) with the sync library's generator,
2. starts the Connectif emulator (its data kept in a SQLite file) and seeds its coupon sets and workflows,
3. starts ``airflow standalone`` on this repo's ``dags/`` and ``plugins/``, with the ``connectif_default``
   connection pointing at the emulator and the pools of ``pools.json``,
4. unpauses the DAGs and triggers a first run of each (contacts and products first, since purchases need
   their contacts and products in Connectif; exports last, so that they export what was just synced),
5. prints a summary per DAG, the UI address and the admin password, and keeps running until Ctrl-C,
   then stops every process it started (process groups, plus a sweep of anything left).

Everything lives under ``.demo/`` (git-ignored). Run it again and it reuses that state: the second
runs send nothing, because nothing changed. ``--fresh`` starts from an empty ``.demo/``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from demo.airflow_api import AirflowAPIError, AirflowClient
from demo.processes import MARKER_VAR, ManagedProcess, sweep
from demo.standalone import REPO, VENV_BIN, AirflowStandalone, StartupError, free_port
from emulator.testing import EmulatorAdmin

DEMO_DIR = REPO / ".demo"
PHASES: tuple[tuple[str, ...], ...] = (
    ("connectif_contacts", "connectif_products"),
    ("connectif_purchases", "connectif_coupons", "connectif_contact_erasure"),
    ("connectif_exports",),
)
ALL_DAGS = tuple(d for phase in PHASES for d in phase)


class DemoStopped(Exception):
    """Raised by the signal handler so that SIGTERM unwinds like Ctrl-C."""


def say(text: str = "") -> None:
    print(text, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--fresh", action="store_true", help="delete .demo/ first (new ERP, empty Connectif, new Airflow)")
    p.add_argument("--contacts", type=int, default=20_000, help="sample ERP customers (default 20000)")
    p.add_argument("--products", type=int, default=2_000, help="sample ERP products (default 2000)")
    p.add_argument("--orders", type=int, default=240, help="orders of the last 24 hours (default 240)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    p.add_argument("--port", type=int, default=8080, help="Airflow UI/API port (default 8080; busy = any free port)")
    p.add_argument("--emulator-port", type=int, default=8765, help="emulator port (default 8765; busy = any free)")
    p.add_argument("--host", default="127.0.0.1", help="interface Airflow and the emulator listen on")
    p.add_argument("--run-timeout", type=float, default=1800, help="seconds to wait for each first run (1800)")
    p.add_argument("--no-wait", action="store_true", help="exit (stopping everything) after the summary")
    return p.parse_args(argv)


def port_or_free(host: str, wanted: int) -> int:
    """``wanted`` if nobody listens there, else a free port (the demo says which)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections of a previous run in TIME_WAIT must not make the port look busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, wanted))
        except OSError:
            return free_port(host)
    return wanted


def _rel(path: Path) -> str:
    """A path as the user sees it: relative to the repo when inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


# -- sample ERP -------------------------------------------------------------------------------------------
def ensure_sample_erp(args: argparse.Namespace, erp_path: Path) -> dict[str, Any]:
    """Generate the ERP once; its summary (with the order window) is kept next to it and reused."""
    summary_path = erp_path.with_suffix(".json")
    wanted = {"contacts": args.contacts, "products": args.products, "orders": args.orders, "seed": args.seed}
    if erp_path.exists() and summary_path.exists():
        saved: dict[str, Any] = json.loads(summary_path.read_text())
        if saved.get("request") == wanted:
            say(f"• sample ERP: reusing {_rel(erp_path)}")
            return saved
        say("• sample ERP: sizes changed, regenerating (use --fresh to also reset Connectif and Airflow)")
    from connectif_sync.erp import generate  # the sync library's generator

    # Orders of the 24 hours before the current hour began: whole hourly intervals, all in the past.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    started = time.monotonic()
    gen = generate(
        f"sqlite:///{erp_path}",
        contacts=args.contacts,
        products=args.products,
        orders=args.orders,
        seed=args.seed,
        order_days=1.0,
        now=now,
    )
    saved = {"request": wanted, "now": now.isoformat(), "summary": gen.as_dict()}
    summary_path.write_text(json.dumps(saved, indent=2))
    rows = gen.as_dict()["rows"]
    say(
        f"• sample ERP: {rows['customers']} customers, {rows['products']} products, {rows['orders']} orders, "
        f"{rows['coupon_pool']} coupon codes, {rows['erasure_requests']} erasure requests "
        f"({time.monotonic() - started:.1f}s) -> {_rel(erp_path)}"
    )
    return saved


# -- emulator ---------------------------------------------------------------------------------------------
def api_key(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    key = f"{secrets.token_hex(12)}:{secrets.token_urlsafe(24)}"
    path.write_text(key)
    path.chmod(0o600)
    return key


def start_emulator(
    host: str, port: int, key: str, state_file: Path, log: Path, marker: str
) -> tuple[ManagedProcess, str]:
    env = {**os.environ, MARKER_VAR: marker}
    argv = [str(VENV_BIN / "python"), "-m", "emulator", "--host", host, "--port", str(port), "--api-key", key]
    argv += ["--state", str(state_file), "--authorized-domain", "example.com"]
    proc = ManagedProcess("emulator", argv, env=env, log_path=log, cwd=REPO)
    proc.start()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartupError(f"the emulator exited; end of {log}:\n{proc.log_tail()}")
        try:
            if httpx.get(f"{url}/_emulator/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StartupError(f"the emulator did not answer within 60s; end of {log}:\n{proc.log_tail()}")


def seed_emulator(url: str, coupon_sets: list[str]) -> None:
    """What a real account already has: coupon sets, and workflows that hand out their codes.

    Two sets are used by an active workflow (the coupons DAG refills them), the last one only by a draft
    (left alone). Ids are fixed, so seeding again replaces rather than duplicates.
    """
    admin = EmulatorAdmin(url)
    try:
        for n, set_id in enumerate(coupon_sets):
            admin.create_coupon_set(name=f"Welcome coupons {n + 1}", type="multiple", id=set_id)
        active = coupon_sets[:-1] if len(coupon_sets) > 1 else coupon_sets
        admin.create_workflow(name="Welcome series", status="active", coupon_set_ids=active, id="0" * 23 + "1")
        admin.create_workflow(
            name="Winback (draft)", status="draft", coupon_set_ids=coupon_sets[-1:], id="0" * 23 + "2"
        )
    finally:
        admin.close()


# -- runs -------------------------------------------------------------------------------------------------
def trigger_phase(
    client: AirflowClient, dag_ids: Sequence[str], order_window: tuple[datetime, datetime]
) -> dict[str, str]:
    runs: dict[str, str] = {}
    for dag_id in dag_ids:
        client.set_paused(dag_id, False)
        if dag_id == "connectif_purchases":
            # One run whose data interval is the sample's day of orders (a backfill of 24 hourly runs would
            # send the same purchases, at 24 times the task overhead).
            run = client.trigger(
                dag_id,
                logical_date=datetime.now(UTC),  # unique, so that the demo can run again on the same .demo/
                data_interval=order_window,
                conf={"trigger_purchase_event": False},
                note="make demo: first sync of the sample's day of orders",
            )
        else:
            run = client.trigger(dag_id, note="make demo: first sync")
        runs[dag_id] = run["dag_run_id"]
        say(f"  ▶ {dag_id}: triggered {run['dag_run_id']}")
    return runs


def runs_since(client: AirflowClient, dag_id: str, since: datetime) -> list[dict[str, Any]]:
    """Runs of ``dag_id`` created since the demo started: ours, and those the scheduler added on unpause."""
    out = []
    for run in client.runs(dag_id):
        queued = run.get("queued_at") or run.get("run_after")
        if queued and datetime.fromisoformat(queued.replace("Z", "+00:00")) >= since:
            out.append(run)
    return sorted(out, key=lambda r: r.get("queued_at") or "")


def summarise(client: AirflowClient, dag_id: str, run: dict[str, Any]) -> dict[str, Any]:
    summary = client.xcom(dag_id, run["dag_run_id"], "report", key="summary") or {}
    duration = None
    if run.get("start_date") and run.get("end_date"):
        start = datetime.fromisoformat(run["start_date"])
        end = datetime.fromisoformat(run["end_date"])
        duration = (end - start).total_seconds()
    failed = []
    if run["state"] != "success":
        failed = [
            f"{ti['task_id']}[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ti["task_id"]
            for ti in client.task_instances(dag_id, run["dag_run_id"])
            if ti["state"] in ("failed", "upstream_failed")
        ]
    label = dag_id if run.get("run_type") == "manual" else f"{dag_id} ({run.get('run_type')})"
    return {"dag_id": label, "state": run["state"], "duration": duration, "summary": summary, "failed": failed}


def print_summaries(rows: list[dict[str, Any]]) -> None:
    head = f"{'DAG':40} {'state':8} {'sent':>8} {'unchanged':>10} {'rejected':>9} {'imports':>8} {'duration':>9}"
    say(head)
    say("─" * len(head))
    for row in rows:
        s = row["summary"]
        dur = f"{row['duration']:.0f}s" if row["duration"] is not None else "-"

        def num(key: str, s: dict[str, Any] = s) -> str:
            value = s.get(key)
            return "-" if value is None else str(value)

        say(
            f"{row['dag_id']:40} {row['state']:8} {num('sent'):>8} {num('unchanged'):>10} "
            f"{num('rejected'):>9} {num('imports'):>8} {dur:>9}"
        )
        if s.get("notes"):
            for note in s["notes"][:6]:
                say(f"{'':40} · {note}")
        if row["failed"]:
            say(f"{'':40} ✗ failed tasks: {', '.join(row['failed'])} (see their logs in the UI)")


# -- main -------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    marker = uuid.uuid4().hex
    procs: list[ManagedProcess] = []
    airflow: AirflowStandalone | None = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise DemoStopped(signal.Signals(signum).name)

    # Ctrl-C must work even when started with SIGINT ignored (e.g. as a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    started = time.monotonic()
    try:
        if args.fresh and DEMO_DIR.exists():
            say(f"• --fresh: removing {_rel(DEMO_DIR)}/")
            shutil.rmtree(DEMO_DIR)
        (DEMO_DIR / "logs").mkdir(parents=True, exist_ok=True)
        erp = ensure_sample_erp(args, DEMO_DIR / "erp.sqlite")
        order_end = datetime.fromisoformat(erp["now"])
        order_window = (order_end - timedelta(days=1), order_end)

        key = api_key(DEMO_DIR / "emulator-api-key")
        emu_port = port_or_free(args.host, args.emulator_port)
        emulator, emu_url = start_emulator(
            args.host, emu_port, key, DEMO_DIR / "emulator.sqlite", DEMO_DIR / "logs" / "emulator.log", marker
        )
        procs.append(emulator)
        seed_emulator(emu_url, erp["summary"]["coupon_sets"])
        say(f"• Connectif emulator: {emu_url} (log: .demo/logs/emulator.log)")

        air_port = port_or_free(args.host, args.port)
        if air_port != args.port:
            say(f"• port {args.port} is busy; Airflow will listen on {air_port}")
        airflow = AirflowStandalone(
            DEMO_DIR / "airflow",
            marker=marker,
            host=args.host,
            port=air_port,
            # The emulator imports thousands of rows a second: poll every 5 s rather than the default 15 s.
            extra_env={"CONNECTIF_POLL_INTERVAL": "5"},
        )
        say("• Airflow: migrating the metadata DB, importing pools.json and the connectif_default connection")
        airflow.prepare(
            pools_file=REPO / "pools.json",
            connections={"connectif_default": {"conn_type": "connectif", "host": emu_url, "password": key}},
        )
        say("• Airflow: starting `airflow standalone` (log: .demo/airflow/standalone.log)")
        airflow.start()
        airflow.wait_ready()
        client = airflow.client()
        airflow.wait_for_dags(client, ALL_DAGS)
        say(f"• Airflow is up at {airflow.url} ({time.monotonic() - started:.0f}s since start)")

        results: list[dict[str, Any]] = []
        since = datetime.now(UTC) - timedelta(seconds=5)
        for phase in PHASES:
            runs = trigger_phase(client, phase, order_window)
            for dag_id, run_id in runs.items():
                run = client.wait_for_run(dag_id, run_id, timeout=args.run_timeout)
                say(f"  ■ {dag_id}: {run['state']}")
            # Unpausing may also have started a scheduled run (e.g. the purchases of the last hour): wait for
            # those too and show them, since they may have done the work before our run.
            for dag_id in phase:
                for other in runs_since(client, dag_id, since):
                    if other["state"] not in ("success", "failed"):
                        other = client.wait_for_run(dag_id, other["dag_run_id"], timeout=args.run_timeout)
                    results.append(summarise(client, dag_id, other))

        say()
        say(f"First sync finished in {time.monotonic() - started:.0f}s:")
        print_summaries(results)
        say()
        say(f"Airflow UI:  {airflow.url}   user: admin   password: {airflow.admin_password()}")
        say(f"Monitoring:  {airflow.url}/plugin/connectif (the Connectif page; each run has a Connectif sync tab)")
        say(f"Emulator:    {emu_url}   (read back what Connectif holds: {emu_url}/_emulator/contacts)")
        say("Data:        .demo/erp.sqlite (ERP), .demo/state.sqlite (sync state, rejected rows),")
        say("             .demo/warehouse.sqlite (exports), logs in .demo/logs and .demo/airflow/logs")
        failed = [r["dag_id"] for r in results if r["state"] != "success"]
        if args.no_wait:
            return 1 if failed else 0
        say()
        say("Everything keeps running on its schedule. Press Ctrl-C to stop it all.")
        while True:
            airflow.check_alive()
            for proc in procs:
                if not proc.alive():
                    raise StartupError(f"{proc.name} exited; end of its log:\n{proc.log_tail()}")
            time.sleep(2)
    except (KeyboardInterrupt, DemoStopped):
        say()
        say("Stopping...")
        return 0
    except (StartupError, TimeoutError, AirflowAPIError) as exc:
        say(f"\n✗ {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if airflow is not None:
            airflow.stop()
        for proc in reversed(procs):
            proc.stop()
        leftovers = sweep(marker)
        if leftovers:
            say(f"(killed {len(leftovers)} leftover process(es): {leftovers})")
        say("All demo processes stopped.")


if __name__ == "__main__":
    sys.exit(main())
