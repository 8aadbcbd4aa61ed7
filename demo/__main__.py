"""``make demo`` / ``python -m demo``: the whole pipeline on this machine, from nothing, in one command.

1. starts the project's embedded PostgreSQL (``localdb.postgres``, cluster in ``.demo/pg``) with the databases
   ``airflow`` (Airflow's metadata), ``erp`` (the sample ERP), ``state`` (the sync state store),
   ``warehouse`` (the exports) and ``rate_limit`` (the shared rate-limit bucket),
2. generates the sample ERP into ``erp`` with the sync library's generator,
3. starts the Connectif emulator (its data kept in a SQLite file) and seeds its coupon sets and workflows,
4. starts ``airflow standalone`` (LocalExecutor) on this repo's ``dags/`` and ``plugins/``, with the
   ``connectif_default`` connection pointing at the emulator and the pools of ``pools.json``,
5. unpauses the DAGs and triggers a first run of each (contacts and products first, since purchases need
   their contacts and products in Connectif; exports last, so that they export what was just synced),
   watching the scheduler, triggerer, DAG processor, emulator and database while it waits,
   Alert mails go to a local SMTP sink the demo runs (``demo.mailsink``): files in ``.demo/mail/``,
6. prints a summary per DAG (with every task that needed more than one try, and why), the UI address and
   the admin password, checks that the monitoring pages show the same figures (:mod:`demo.pages`), and
   keeps running until Ctrl-C, then stops every process it started (process groups, a sweep of anything
   left, and the database server).

Everything lives under ``.demo/`` (git-ignored). Run it again and it reuses that state, the database
included: the second runs send nothing, because nothing changed. ``--fresh`` starts from an empty ``.demo/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx

from demo.airflow_api import TERMINAL_RUN_STATES, AirflowAPIError, AirflowClient
from demo.mailsink import DEMO_RECIPIENT, MailSink
from demo.pages import check_pages
from demo.processes import MARKER_VAR, ManagedProcess, sweep
from demo.retries import RetriedTask, retried_tasks
from demo.standalone import REPO, VENV_BIN, AirflowStandalone, StartupError, free_port
from demo.watchdog import Watchdog
from emulator.testing import EmulatorAdmin
from localdb.postgres import LocalPostgres, PostgresError, running, start

DEMO_DIR = REPO / ".demo"
PG_DIR = DEMO_DIR / "pg"
#: The embedded server's databases: Airflow's metadata, the sample ERP, the sync state store, the warehouse
#: the exports load, and the shared rate-limit bucket.
DATABASES = ("airflow", "erp", "state", "warehouse", "rate_limit")
PHASES: tuple[tuple[str, ...], ...] = (
    ("connectif_contacts", "connectif_products"),
    ("connectif_purchases", "connectif_coupons", "connectif_contact_erasure"),
    ("connectif_exports",),
)
ALL_DAGS = tuple(d for phase in PHASES for d in phase)
#: LocalExecutor slots: every DAG's first run at once (its running tasks; deferred imports hold none).
PARALLELISM = 16
#: The Variable the purchases DAG reads when a run leaves ``trigger_purchase_event`` empty. The demo's data is
#: made up: its scheduled purchase runs must not fire purchase workflows (e-mails in a real account).
TRIGGER_VARIABLE = "connectif_trigger_purchase_event"
#: Components whose death stops the first runs from ever finishing (a dead DAG processor does not).
FATAL_WHILE_WAITING = ("scheduler", "triggerer", "metadatabase", "api-server", "emulator", "postgresql")


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
    p.add_argument(
        "--health-grace",
        type=float,
        default=90,
        help="seconds a component may look unhealthy before the demo calls it down (default 90)",
    )
    p.add_argument("--no-wait", action="store_true", help="exit (stopping everything) after the summary")
    return p.parse_args(argv)


def port_or_free(host: str, wanted: int) -> int:
    """``wanted`` if nobody listens there, else a free port (the demo says which)."""
    return wanted if port_is_free(host, wanted) else free_port(host)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections of a previous run in TIME_WAIT must not make the port look busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _rel(path: Path) -> str:
    """A path as the user sees it: relative to the repo when inside it."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


# -- the embedded PostgreSQL --------------------------------------------------------------------------------
def previous_port(root: Path) -> int | None:
    """The port the cluster in ``root`` last listened on (``postmaster.opts``), so that URLs stay the same."""
    try:
        found = re.search(r"port=(\d+)", (root / "data" / "postmaster.opts").read_text())
    except OSError:
        return None
    return int(found.group(1)) if found else None


def start_database(root: Path) -> LocalPostgres:
    """Start (or reuse) the demo's server and create its databases; a second demo finds the first's data."""
    before = previous_port(root)
    port = before if before and port_is_free("127.0.0.1", before) else None
    server = start(root, port=port)
    for name in DATABASES:
        server.create_database(name)
    return server


def stop_database_in(root: Path) -> None:
    """Stop a server still running on ``root`` (a demo killed with SIGKILL leaves it), e.g. before --fresh."""
    server = running(root)
    if server is not None:
        server.stop()


# -- sample ERP -------------------------------------------------------------------------------------------
def erp_has_tables(url: str) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        return {"customers", "orders", "erasure_requests"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def ensure_sample_erp(args: argparse.Namespace, url: str, summary_path: Path) -> dict[str, Any]:
    """Generate the ERP once; its summary (with the order window) is kept in ``summary_path`` and reused."""
    wanted = {"contacts": args.contacts, "products": args.products, "orders": args.orders, "seed": args.seed}
    if summary_path.exists() and erp_has_tables(url):
        saved: dict[str, Any] = json.loads(summary_path.read_text())
        if saved.get("request") == wanted:
            say("• sample ERP: reusing the database erp")
            return saved
        say("• sample ERP: sizes changed, regenerating (use --fresh to also reset Connectif and Airflow)")
    from sample_erp import generate  # test data, outside the sync library

    # Orders of the 24 hours before the current hour began: whole hourly intervals, all in the past.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    started = time.monotonic()
    gen = generate(
        url,
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
        f"({time.monotonic() - started:.1f}s) -> PostgreSQL database erp"
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
def no_purchase_workflows(client: AirflowClient) -> None:
    """Scheduled purchase runs leave ``trigger_purchase_event`` empty: the Variable decides, off in the demo.

    Set once (a value the user chose in Admin → Variables is kept)."""
    if client.variable(TRIGGER_VARIABLE) is None:
        client.create_variable(
            TRIGGER_VARIABLE,
            "false",
            "make demo: purchase runs that leave trigger_purchase_event empty fire no purchase workflows",
        )
    value = client.variable(TRIGGER_VARIABLE)
    say(f"• Variable {TRIGGER_VARIABLE} = {value} (scheduled purchase runs fire workflows only if true)")


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


def wait_for_run(
    client: AirflowClient, watchdog: Watchdog, dag_id: str, run_id: str, *, timeout: float, poll: float = 3.0
) -> dict[str, Any]:
    """Poll a run until it ends, checking on every poll that what it needs is alive; a run that cannot
    finish (dead scheduler, triggerer, emulator, database) stops the wait at once with the reason."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {"state": "unknown (the API server did not answer)"}
    while True:
        # A slow answer on a busy machine is no failure; the watchdog says when the API server is really down.
        with contextlib.suppress(httpx.TransportError):
            run = client.run(dag_id, run_id)
        if run["state"] in TERMINAL_RUN_STATES:
            return run
        fatal = {part: why for part, why in watchdog.check().items() if part in FATAL_WHILE_WAITING}
        if fatal:
            what = ", ".join(f"{part} ({why})" for part, why in fatal.items())
            raise StartupError(f"{dag_id} run {run_id} cannot finish: {what} down")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f}s")
        time.sleep(poll)


def runs_since(client: AirflowClient, dag_id: str, since: datetime) -> list[dict[str, Any]]:
    """Runs of ``dag_id`` created since the demo started: ours, and those the scheduler added on unpause."""
    out = []
    for run in client.runs(dag_id):
        queued = run.get("queued_at") or run.get("run_after")
        if queued and datetime.fromisoformat(queued.replace("Z", "+00:00")) >= since:
            out.append(run)
    return sorted(out, key=lambda r: r.get("queued_at") or "")


def summarise(
    client: AirflowClient, dag_id: str, run: dict[str, Any], scheduler_log: Path | None = None
) -> dict[str, Any]:
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
    return {
        "dag_id": label,
        "state": run["state"],
        "duration": duration,
        "summary": summary,
        "failed": failed,
        "retried": retried_tasks(client, dag_id, run["dag_run_id"], scheduler_log=scheduler_log),
    }


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
        if "trigger_purchase_event" in s:
            say(f"{'':40} · purchase workflows fired: {'yes' if s['trigger_purchase_event'] else 'no'}")
        retried: list[RetriedTask] = row.get("retried") or []
        for task in retried:
            say(f"{'':40} ⟳ {task.describe()}")
        if row["failed"]:
            say(f"{'':40} ✗ failed tasks: {', '.join(row['failed'])} (see their logs in the UI)")
    retries = sum(len(row.get("retried") or []) for row in rows)
    say()
    if retries:
        say(f"⟳ {retries} task(s) needed more than one try (listed above with the error of each failed try).")
    else:
        say("Every task succeeded at its first try.")


# -- main -------------------------------------------------------------------------------------------------
def handle_stop_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP stop the demo cleanly (``main``'s ``finally``)."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise DemoStopped(signal.Signals(signum).name)

    # Ctrl-C must work even when started with SIGINT ignored (e.g. as a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def demo_airflow(args: argparse.Namespace, marker: str, database: LocalPostgres) -> AirflowStandalone:
    """The demo's ``airflow standalone`` (not started yet): metadata on the demo's PostgreSQL."""
    air_port = port_or_free(args.host, args.port)
    if air_port != args.port:
        say(f"• port {args.port} is busy; Airflow will listen on {air_port}")
    return AirflowStandalone(
        DEMO_DIR / "airflow",
        marker=marker,
        host=args.host,
        port=air_port,
        parallelism=PARALLELISM,
        database_url=database.url("airflow"),
        extra_env={
            # The emulator imports thousands of rows a second: poll every 5 s rather than the default 15 s.
            "CONNECTIF_POLL_INTERVAL": "5",
            # Where the DAGs read and write (the fallbacks of the connectif_* Variables, which stay unset).
            "CONNECTIF_SOURCE_URL": database.url("erp"),
            "CONNECTIF_STATE_URL": database.url("state"),
            "CONNECTIF_WAREHOUSE_URL": database.url("warehouse"),
            "CONNECTIF_WORK_DIR": str(DEMO_DIR / "work"),
            # Alerts (failures, guardrail holds, anomalies) mailed to the sink; the Variable wins if set.
            "CONNECTIF_ALERT_EMAIL": DEMO_RECIPIENT,
        },
    )


def boot_airflow(
    airflow: AirflowStandalone, database: LocalPostgres, emu_url: str, key: str, mail: MailSink, started: float
) -> AirflowClient:
    """Migrate, import the pools and ``connectif_default``, start, and wait for every DAG; a logged-in client."""
    say("• Airflow: migrating the metadata DB, importing pools.json and the connectif_default connection")
    airflow.prepare(
        pools_file=REPO / "pools.json",
        connections={
            "connectif_default": {
                "conn_type": "connectif",
                "host": emu_url,
                "password": key,
                "extra": json.dumps({"rate_limit_backend": database.url("rate_limit")}),
            },
            "smtp_default": mail.connection(),
        },
    )
    say("• Airflow: starting `airflow standalone` (log: .demo/airflow/standalone.log)")
    airflow.start()
    airflow.wait_ready()
    client = airflow.client()
    airflow.wait_for_dags(client, ALL_DAGS)
    say(f"• Airflow is up at {airflow.url} ({time.monotonic() - started:.0f}s since start)")
    no_purchase_workflows(client)
    return client


def first_sync(
    client: AirflowClient,
    watchdog: Watchdog,
    args: argparse.Namespace,
    order_window: tuple[datetime, datetime],
    log_path: Path,
) -> list[dict[str, Any]]:
    """Run every DAG once, phase by phase; the summary of each run (scheduled ones that started too)."""
    results: list[dict[str, Any]] = []
    since = datetime.now(UTC) - timedelta(seconds=5)
    for phase in PHASES:
        runs = trigger_phase(client, phase, order_window)
        for dag_id, run_id in runs.items():
            run = wait_for_run(client, watchdog, dag_id, run_id, timeout=args.run_timeout)
            say(f"  ■ {dag_id}: {run['state']}")
        # Unpausing may also have started a scheduled run (e.g. the purchases of the last hour): wait for
        # those too and show them, since they may have done the work before our run.
        for dag_id in phase:
            for other in runs_since(client, dag_id, since):
                if other["state"] not in TERMINAL_RUN_STATES:
                    other = wait_for_run(client, watchdog, dag_id, other["dag_run_id"], timeout=args.run_timeout)
                results.append(summarise(client, dag_id, other, log_path))
    return results


def print_access(airflow: AirflowStandalone, emu_url: str, database: LocalPostgres, mail: MailSink) -> None:
    say(f"Airflow UI:  {airflow.url}   user: admin   password: {airflow.admin_password()}")
    say(f"REST API:    POST {airflow.url}/auth/token with that user and password, then `Authorization: Bearer`")
    say(f"Monitoring:  {airflow.url}/plugin/connectif (the Connectif page; each run has a Connectif sync tab)")
    say(f"Emulator:    {emu_url}   (read back what Connectif holds: {emu_url}/_emulator/contacts)")
    say(
        f"Mail:        alerts to {DEMO_RECIPIENT}: {_rel(mail.folder)}/index.txt lists them, one .eml file each "
        f"({len(mail.mails())} so far)"
    )
    say(f"Data:        PostgreSQL {database.url(driver='')} (cluster {_rel(PG_DIR)}): databases")
    say("             airflow (metadata), erp (sample ERP), state (sync state, rejected rows),")
    say("             warehouse (exports), rate_limit (shared bucket); logs in .demo/logs and .demo/airflow/logs")
    say(f"             rejected rows: {airflow.url}/connectif/rejected?object=contacts (CSV: rejected.csv?...)")


def print_page_check(airflow: AirflowStandalone, results: list[dict[str, Any]]) -> bool:
    """Whether the monitoring pages show the figures of the summary just printed (each check said)."""
    say()
    say("Checking the monitoring pages against the summary above:")
    pages = check_pages(airflow.url, "admin", airflow.admin_password(), [r["summary"] for r in results])
    for line in pages.lines():
        say(f"  {line}")
    return pages.ok


def keep_running(airflow: AirflowStandalone, procs: list[ManagedProcess], watchdog: Watchdog) -> NoReturn:
    """Until Ctrl-C: fail when a process exits; the watchdog says loudly what is down, and when it is back."""
    say("Everything keeps running on its schedule. Press Ctrl-C to stop it all (the database server too).")
    while True:
        airflow.check_alive()
        for proc in procs:
            if not proc.alive():
                raise StartupError(f"{proc.name} exited; end of its log:\n{proc.log_tail()}")
        watchdog.check()
        time.sleep(5)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    marker = uuid.uuid4().hex
    procs: list[ManagedProcess] = []
    airflow: AirflowStandalone | None = None
    database: LocalPostgres | None = None
    mail: MailSink | None = None
    handle_stop_signals()
    started = time.monotonic()
    try:
        if args.fresh and DEMO_DIR.exists():
            say(f"• --fresh: removing {_rel(DEMO_DIR)}/")
            stop_database_in(PG_DIR)
            shutil.rmtree(DEMO_DIR)
        (DEMO_DIR / "logs").mkdir(parents=True, exist_ok=True)
        if (DEMO_DIR / "erp.sqlite").exists():
            say("• .demo/ holds an older demo on SQLite files: ignored (`make demo DEMO_ARGS=--fresh` clears it)")
        database = start_database(PG_DIR)
        say(
            f"• PostgreSQL {database.url(driver='').rsplit('/', 1)[0]} (cluster {_rel(PG_DIR)}, log "
            f"{_rel(database.log_file)}): databases {', '.join(DATABASES)}"
        )
        erp = ensure_sample_erp(args, database.url("erp"), DEMO_DIR / "erp.json")
        order_end = datetime.fromisoformat(erp["now"])

        key = api_key(DEMO_DIR / "emulator-api-key")
        emu_port = port_or_free(args.host, args.emulator_port)
        emulator, emu_url = start_emulator(
            args.host, emu_port, key, DEMO_DIR / "emulator.sqlite", DEMO_DIR / "logs" / "emulator.log", marker
        )
        procs.append(emulator)
        seed_emulator(emu_url, erp["summary"]["coupon_sets"])
        say(f"• Connectif emulator: {emu_url} (log: .demo/logs/emulator.log)")

        mail = MailSink(DEMO_DIR / "mail", port=free_port("127.0.0.1")).start()
        say(f"• mail: alerts to {DEMO_RECIPIENT} land in {_rel(mail.folder)}/ (SMTP sink on 127.0.0.1:{mail.port})")
        airflow = demo_airflow(args, marker, database)
        client = boot_airflow(airflow, database, emu_url, key, mail, started)
        db = database
        watchdog = Watchdog(
            airflow.url, emulator_url=emu_url, database_alive=db.is_running, grace=args.health_grace, say=say
        )
        results = first_sync(client, watchdog, args, (order_end - timedelta(days=1), order_end), airflow.log_path)
        say()
        say(f"First sync finished in {time.monotonic() - started:.0f}s:")
        print_summaries(results)
        say()
        print_access(airflow, emu_url, database, mail)
        pages_ok = print_page_check(airflow, results)
        failed = [r["dag_id"] for r in results if r["state"] != "success"]
        if args.no_wait:
            return 1 if failed or not pages_ok else 0
        say()
        keep_running(airflow, procs, watchdog)
    except (KeyboardInterrupt, DemoStopped):
        say()
        say("Stopping...")
        return 0
    except (StartupError, TimeoutError, AirflowAPIError, PostgresError, httpx.HTTPError) as exc:
        say(f"\n✗ {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if airflow is not None:
            airflow.stop()
        if mail is not None:
            mail.stop()
        for proc in reversed(procs):
            proc.stop()
        leftovers = sweep(marker)
        if leftovers:
            say(f"(killed {len(leftovers)} leftover process(es): {leftovers})")
        if database is not None:
            database.stop()
            say(f"PostgreSQL stopped (its data stays in {_rel(PG_DIR)}; the next `make demo` starts it again).")
        say("All demo processes stopped.")


if __name__ == "__main__":
    sys.exit(main())
