"""The docker-compose topology without Docker: ``make test-distributed`` (``python -m deploy.distributed``).

Starts, from Debian packages and the project venv, on loopback and free ports, in one temporary directory:
the project's embedded PostgreSQL (``localdb.postgres``: metadata DB, sync state + rate-limit bucket,
warehouse, sample ERP), ``redis-server`` (Celery broker), the Connectif emulator, and Airflow with the
CeleryExecutor: api-server, scheduler, dag-processor, triggerer and two ``airflow celery worker`` processes
with distinct hostnames. It initialises Airflow with ``deploy/init.sh`` (the script docker-compose's
``airflow-init`` runs), runs DAGs through the REST API, restarts the triggerer while deferred imports wait,
and asserts:

- both workers executed tasks (task instances carry each worker's hostname);
- the imports deferred before the restart were still deferred after the old triggerer stopped, and finished
  once the new one ran (so the new triggerer resumed them);
- the emulator never saw more requests in a window than its limit and answered no 429;
- what the emulator holds equals the source.

Everything is stopped at the end, on failure, on Ctrl-C and on SIGTERM (process groups, then a sweep of any
process carrying this run's marker). Exit code 0 = all assertions held.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from demo.airflow_api import AirflowClient
from demo.processes import MARKER_VAR, ManagedProcess, sweep
from localdb import postgres
from localdb.server import free_port

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
WORKERS = ("worker-a", "worker-b")
ADMIN = "admin"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class DistributedRunError(AssertionError):
    """An expectation of the distributed run did not hold."""


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the service may not be up yet
            last_error = exc
        time.sleep(interval)
    suffix = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s{suffix}")


@dataclass
class Timings:
    """Wall-clock durations of the phases, printed at the end (the run's duration is a reported figure)."""

    started: float = field(default_factory=time.monotonic)
    phases: list[tuple[str, float]] = field(default_factory=list)
    _mark: float = field(default_factory=time.monotonic)

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.phases.append((name, now - self._mark))
        self._mark = now

    def total(self) -> float:
        return time.monotonic() - self.started


class Stack:
    """The processes of one distributed run, all in ``workdir``, all stopped by :meth:`stop`."""

    def __init__(self, workdir: Path, *, dags_folder: Path, emulator_speed: float) -> None:
        self.workdir = workdir
        self.dags_folder = dags_folder
        self.emulator_speed = emulator_speed
        self.marker = uuid.uuid4().hex
        self.processes: dict[str, ManagedProcess] = {}
        self.ports = {
            name: free_port()
            for name in ("redis", "api", "emulator", "triggerer_logs", "scheduler_health",
                         *(f"{w}_logs" for w in WORKERS))
        }
        self.api_key = f"dist{secrets.token_hex(4)}:{secrets.token_hex(16)}"
        self.admin_password = secrets.token_urlsafe(12)
        self.fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.jwt_secret = secrets.token_urlsafe(48)
        self.api_secret_key = secrets.token_urlsafe(48)
        self.postgres: postgres.LocalPostgres | None = None
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- urls --------------------------------------------------------------------------------------------
    def db_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        if self.postgres is None:
            raise DistributedRunError("PostgreSQL is not started")
        return f"{driver}://{postgres.DB_USER}@127.0.0.1:{self.postgres.port}/{database}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['emulator']}"

    # -- processes ---------------------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CONNECTIF_"))}
        env[MARKER_VAR] = self.marker
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(REPO)  # deploy.hostname (hostname_callable) and the demo helpers
        return env

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(name, argv, env=env or self.base_env(), log_path=self.logs / f"{name}.log", cwd=REPO)
        proc.start()
        self.processes[name] = proc
        return proc

    def stop(self) -> None:
        """Workers first (warm shutdown), then Airflow's services, then the emulator, Redis and PostgreSQL."""
        order = [*WORKERS, "triggerer", "scheduler", "dag-processor", "api-server", "emulator", "redis"]
        names = [n for n in order if n in self.processes] + [n for n in self.processes if n not in order]
        for name in names:
            with contextlib.suppress(Exception):
                self.processes[name].stop(timeout=30)
        server = self.postgres or postgres.running(self.workdir / "pg")  # also one whose start was interrupted
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        leftovers = sweep(self.marker)
        if leftovers:
            print(f"[distributed] swept {len(leftovers)} leftover process(es): {leftovers}", flush=True)

    def check_alive(self) -> None:
        if self.postgres is not None and not self.postgres.is_running():
            log = self.postgres.log_file
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
            raise DistributedRunError(f"PostgreSQL stopped; last lines of {log}:\n{tail}")
        for name, proc in self.processes.items():
            if not proc.alive():
                raise DistributedRunError(
                    f"{name} exited with {proc.returncode()}; last lines of {proc.log_path}:\n{proc.log_tail()}"
                )

    # -- PostgreSQL --------------------------------------------------------------------------------------
    def start_postgres(self, databases: Sequence[str]) -> None:
        """The project's embedded PostgreSQL in ``workdir/pg`` (throw-away: no fsync), with ``databases``."""
        self.postgres = postgres.start(self.workdir / "pg", settings={"fsync": "off"}, max_connections=300)
        for database in databases:
            self.postgres.create_database(database)

    # -- Redis -------------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir()
        binary = shutil.which("redis-server")
        if binary is None:
            raise DistributedRunError("redis-server is not installed: run `make system-deps`")
        self.start("redis", [binary, "--port", str(self.ports["redis"]), "--bind", "127.0.0.1", "--dir",
                             str(redis_dir), "--save", "", "--appendonly", "no", "--protected-mode", "yes"])

        def ready() -> bool:
            self.check_alive()
            with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        wait_for("redis-server", ready, timeout=30)

    # -- emulator ----------------------------------------------------------------------------------------
    def start_emulator(self, extra_args: Sequence[str] = ()) -> None:
        self.start("emulator", [str(VENV_BIN / "python"), "-m", "emulator", "--host", "127.0.0.1",
                                "--port", str(self.ports["emulator"]), "--api-key", self.api_key,
                                "--speed", str(self.emulator_speed), *extra_args])

        def ready() -> bool:
            self.check_alive()
            return httpx.get(f"{self.emulator_url}/_emulator/health", timeout=2).status_code == 200

        wait_for("Connectif emulator", ready, timeout=60)

    def emulator_admin(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = httpx.request(method, f"{self.emulator_url}/_emulator{path}", timeout=30, **kwargs)
        resp.raise_for_status()
        return resp.json()

    # -- Airflow -----------------------------------------------------------------------------------------
    def airflow_env(self, **extra: str) -> dict[str, str]:
        home = self.workdir / "airflow"
        env = self.base_env()
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url("airflow"),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": self.db_url("airflow", "db+postgresql"),
            # One task slot per worker (Airflow acknowledges Celery tasks late, with a prefetch of 1): two tasks
            # queued together cannot both land on one worker, so both workers always get work.
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self.api_secret_key,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.ports["api"]),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.workdir / "auth" / "passwords.json"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "deploy.hostname.worker_hostname",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.ports["scheduler_health"]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["triggerer_logs"]),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__CORE__PARALLELISM": "16",
        })
        env.update(extra)
        return env

    def init_airflow(self, extra_env: Mapping[str, str]) -> None:
        """``deploy/init.sh``: the very script of docker-compose's airflow-init."""
        env = self.airflow_env(
            **extra_env,
            AIRFLOW_ADMIN_USERNAME=ADMIN,
            AIRFLOW_ADMIN_PASSWORD=self.admin_password,
            CONNECTIF_API_KEY=self.api_key,
            CONNECTIF_HOST=self.emulator_url,
            CONNECTIF_RATE_LIMIT_BACKEND=self.db_url("connectif"),
            CONNECTIF_RATE_LIMIT_PER_MINUTE="90",
            AIRFLOW_BIN=str(VENV_BIN / "airflow"),
            PYTHON_BIN=str(VENV_BIN / "python"),
        )
        with (self.logs / "init.log").open("wb") as log:
            proc = subprocess.run(["bash", str(REPO / "deploy" / "init.sh")], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=600)
        if proc.returncode != 0:
            tail = "\n".join((self.logs / "init.log").read_text(errors="replace").splitlines()[-30:])
            raise DistributedRunError(f"deploy/init.sh failed ({proc.returncode}):\n{tail}")

    def start_airflow(self, extra_env: Mapping[str, str]) -> None:
        airflow = str(VENV_BIN / "airflow")
        env = self.airflow_env(**extra_env)
        self.start("api-server", [airflow, "api-server"], env)
        self.start("scheduler", [airflow, "scheduler"], env)
        self.start("dag-processor", [airflow, "dag-processor"], env)
        self.start_triggerer(extra_env)
        for worker in WORKERS:
            worker_env = self.airflow_env(
                **extra_env,
                CONNECTIF_WORKER_HOSTNAME=worker,
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(self.ports[f"{worker}_logs"]),
            )
            self.start(worker, [airflow, "celery", "worker", "--celery-hostname", f"{worker}@%h",
                                "--concurrency", "1"], worker_env)

    def start_triggerer(self, extra_env: Mapping[str, str]) -> None:
        self.start("triggerer", [str(VENV_BIN / "airflow"), "triggerer"], self.airflow_env(**extra_env))

    def wait_airflow_ready(self) -> None:
        def healthy() -> bool:
            self.check_alive()
            health = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
            return all(health.get(c, {}).get("status") == "healthy"
                       for c in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

        wait_for("Airflow api-server, scheduler, triggerer and dag-processor", healthy, timeout=240, interval=2)

        def workers_ready() -> bool:
            self.check_alive()
            return all(f"{w}@" in self.processes[w].log_tail(400) and " ready." in self.processes[w].log_tail(400)
                       for w in WORKERS)

        wait_for("both Celery workers", workers_ready, timeout=180, interval=2)

    def client(self) -> AirflowClient:
        return AirflowClient(self.api_url, ADMIN, self.admin_password)


# -- scenarios -------------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """What the scenario observed, for the assertions and the summary."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_instances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deferred_at_restart: list[str] = field(default_factory=list)
    retried: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Trigger:
    """One DAG run to trigger: its DAG and the keyword arguments of ``AirflowClient.trigger``."""

    dag_id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def trigger_and_watch(
    stack: Stack,
    client: AirflowClient,
    phases: Sequence[Sequence[Trigger]],
    *,
    deferring: tuple[str, str],
    extra_env: Mapping[str, str],
    after_phase: Callable[[int, RunOutcome], None] | None = None,
    timeout: float = 1800,
) -> RunOutcome:
    """Run the phases one after the other (the runs of a phase together); restart the triggerer once the
    ``deferring`` = (dag_id, task_id) task has instances deferred."""
    outcome = RunOutcome()
    dag_ids = [t.dag_id for phase in phases for t in phase]
    wait_for(f"DAGs {', '.join(dag_ids)} parsed",
             lambda: {d["dag_id"] for d in client.dags()} >= set(dag_ids), timeout=300, interval=3)
    restarted = False
    deadline = time.monotonic() + timeout
    for number, phase in enumerate(phases):
        run_ids: dict[str, str] = {}
        for trig in phase:
            client.set_paused(trig.dag_id, False)
            run_ids[trig.dag_id] = client.trigger(trig.dag_id, **dict(trig.kwargs))["dag_run_id"]
            print(f"[distributed] triggered {trig.dag_id} {run_ids[trig.dag_id]}", flush=True)
        while True:
            stack.check_alive()
            states = {dag_id: client.run(dag_id, run_id)["state"] for dag_id, run_id in run_ids.items()}
            for run_dag, run_id in run_ids.items():
                for ti in client.task_instances(run_dag, run_id):
                    key = f"{run_dag}.{_ti_key(ti)}#{ti.get('try_number')}"
                    if ti["state"] in ("up_for_retry", "failed") and key not in outcome.retried:
                        outcome.retried.add(key)
                        print(f"[distributed] {key} is {ti['state']}: see {stack.workdir}/airflow/logs/"
                              f"dag_id={run_dag}/run_id={run_id}/task_id={ti['task_id']}", flush=True)
            dag_id, task_id = deferring
            if not restarted and dag_id in run_ids:
                tis = client.task_instances(dag_id, run_ids[dag_id])
                deferred = [_ti_key(ti) for ti in tis if ti["task_id"] == task_id and ti["state"] == "deferred"]
                if deferred:
                    restart_triggerer(stack, client, dag_id, run_ids[dag_id], deferred, extra_env, outcome)
                    restarted = True
                elif states[dag_id] in ("success", "failed"):
                    raise DistributedRunError(f"{dag_id} finished before any {task_id} was seen deferred")
            if all(s in ("success", "failed") for s in states.values()):
                break
            if time.monotonic() > deadline:
                raise DistributedRunError(f"runs not finished after {timeout:.0f}s: {states}")
            time.sleep(1.0)
        for dag_id, run_id in run_ids.items():
            outcome.runs[dag_id] = client.run(dag_id, run_id)
            outcome.task_instances[dag_id] = client.task_instances(dag_id, run_id)
            print(f"[distributed] {dag_id}: {outcome.runs[dag_id]['state']}", flush=True)
        if after_phase is not None:
            after_phase(number, outcome)
    return outcome


def _ti_key(ti: dict[str, Any]) -> str:
    index = ti.get("map_index", -1)
    return f"{ti['task_id']}[{index}]" if index is not None and index >= 0 else ti["task_id"]


def restart_triggerer(
    stack: Stack,
    client: AirflowClient,
    dag_id: str,
    run_id: str,
    deferred: list[str],
    extra_env: Mapping[str, str],
    outcome: RunOutcome,
) -> None:
    """Stop the triggerer mid-wait, check the waits are still pending, start a new one."""
    print(f"[distributed] {dag_id}: {len(deferred)} deferred ({', '.join(deferred)}): restarting the triggerer",
          flush=True)
    old = stack.processes.pop("triggerer")
    old.stop(timeout=60)
    states = {_ti_key(ti): ti["state"] for ti in client.task_instances(dag_id, run_id)}
    still = [key for key in deferred if states.get(key) == "deferred"]
    if not still:
        raise DistributedRunError(f"no import was still deferred once the triggerer stopped: {states}")
    outcome.deferred_at_restart = [f"{dag_id}.{key}" for key in still]
    outcome.notes.append(f"triggerer stopped with {len(still)} import(s) deferred; a new triggerer resumed them")
    time.sleep(3)  # a visible gap with no triggerer at all
    stack.start_triggerer(extra_env)


def check_common(stack: Stack, outcome: RunOutcome) -> list[str]:
    """The assertions every scenario shares; returns human-readable findings."""
    findings: list[str] = []
    for dag_id, run in outcome.runs.items():
        if run["state"] != "success":
            failed = [_ti_key(ti) for ti in outcome.task_instances[dag_id] if ti["state"] not in ("success", "skipped")]
            raise DistributedRunError(f"{dag_id} ended {run['state']}; tasks not successful: {failed}")
    hosts: dict[str, int] = {}
    for tis in outcome.task_instances.values():
        for ti in tis:
            if ti["state"] == "success" and ti.get("hostname"):
                hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
    missing = [w for w in WORKERS if not hosts.get(w)]
    if missing:
        raise DistributedRunError(f"worker(s) {missing} executed no task; task instances per host: {hosts}")
    findings.append(f"tasks per worker: {hosts}; task failures/retries on the way: {len(outcome.retried)}")
    resumed = {
        f"{dag_id}.{_ti_key(ti)}": ti["state"]
        for dag_id, tis in outcome.task_instances.items()
        for ti in tis
        if f"{dag_id}.{_ti_key(ti)}" in outcome.deferred_at_restart
    }
    if (
        not outcome.deferred_at_restart
        or set(resumed) != set(outcome.deferred_at_restart)
        or any(state != "success" for state in resumed.values())
    ):
        raise DistributedRunError(f"imports deferred across the triggerer restart did not all succeed: {resumed}")
    findings.append(f"deferred across the triggerer restart and resumed: {sorted(resumed)}")
    stats = stack.emulator_admin("GET", "/stats")
    limit = stack.emulator_admin("GET", "/settings")["rate_limit"]
    if stats["rateLimited"] or stats["statuses"].get("429"):
        raise DistributedRunError(f"the emulator answered 429 {stats['rateLimited']} time(s)")
    if stats["maxRequestsInWindow"] > limit:
        raise DistributedRunError(f"{stats['maxRequestsInWindow']} requests in one window, above the limit {limit}")
    findings.append(
        f"emulator: {stats['totalRequests']} requests, at most {stats['maxRequestsInWindow']} per window "
        f"(limit {limit}), 0 answered 429; per endpoint: {stats['requests']}"
    )
    return findings


def scenario_probe(stack: Stack, timings: Timings) -> list[str]:
    """The topology with the small probe DAG of tests/deploy/dags (no dependency on dags/)."""
    probe_dir = stack.workdir / "probe"
    probe_dir.mkdir()
    extra_env = {"CONNECTIF_PROBE_DIR": str(probe_dir)}
    stack.init_airflow(extra_env)
    timings.lap("airflow init (deploy/init.sh)")
    stack.start_airflow(extra_env)
    stack.wait_airflow_ready()
    timings.lap("airflow components ready")
    with stack.client() as client:
        outcome = trigger_and_watch(stack, client, [[Trigger("connectif_deploy_probe")]],
                                    deferring=("connectif_deploy_probe", "import_contacts"), extra_env=extra_env)
    timings.lap("DAG run")
    findings = check_common(stack, outcome)
    sys.path.insert(0, str(REPO / "tests" / "deploy" / "dags"))
    from connectif_deploy_probe import FILES, ROWS_PER_FILE, probe_email

    expected = {probe_email(part, row) for part in range(FILES) for row in range(ROWS_PER_FILE)}
    got = {c["_email"] for c in stack.emulator_admin("GET", "/contacts")}
    if got != expected:
        raise DistributedRunError(
            f"emulator contacts differ from the source: {len(expected - got)} missing, {len(got - expected)} extra"
        )
    findings.append(f"emulator holds exactly the {len(expected)} contacts of the source")
    return findings


#: Size of the sample ERP of the pipeline scenario: one contacts file whose import waits long enough (at the
#: emulator speed below) for the triggerer to be restarted mid-wait.
SAMPLE = {"contacts": 3000, "products": 200, "orders": 120, "seed": 7}


def _query(url: str, sql: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def _rejected_ids(state_url: str, obj: str) -> dict[int, str]:
    """Source ids of the rows the sync set aside, with their reasons (``source_ref`` is ``id=<n>...``)."""
    from connectif_sync.store import StateStore

    with StateStore(state_url) as store:
        rows = store.rejected(obj, limit=1_000_000)
    out: dict[int, str] = {}
    for row in rows:
        if not row.get("reason") or not str(row.get("source_ref", "")).startswith("id="):
            raise DistributedRunError(f"rejected {obj} row without a reason or source id: {row}")
        out[int(str(row["source_ref"]).split("=")[1].split(",")[0])] = str(row["reason"])
    return out


def check_contacts(stack: Stack, erp_url: str, state_url: str, dirty_ids: set[int]) -> str:
    """Connectif holds every ERP customer that was not rejected, with its fields; only dirty rows were rejected."""
    rejected = _rejected_ids(state_url, "contacts")
    clean_rejected = set(rejected) - dirty_ids
    if clean_rejected:
        raise DistributedRunError(f"clean customers were rejected: {sorted(clean_rejected)[:10]}")
    customers = _query(erp_url, "SELECT id, email, first_name, last_name, customer_code FROM customers")
    expected = {str(c["email"]).strip().lower(): c for c in customers if c["id"] not in rejected}
    stored = {c["_email"]: c for c in stack.emulator_admin("GET", "/contacts")}
    if set(stored) != set(expected):
        raise DistributedRunError(
            f"contacts differ: {len(set(expected) - set(stored))} missing in Connectif, "
            f"{len(set(stored) - set(expected))} unexpected"
        )
    for email, c in expected.items():
        got = stored[email]
        wanted = {"_name": c["first_name"], "_surname": c["last_name"], "_externalId": c["customer_code"]}
        if {k: got.get(k) for k in wanted} != wanted:
            raise DistributedRunError(f"contact {email}: Connectif has {got}, the ERP says {wanted}")
    return f"Connectif holds exactly the {len(expected)} valid ERP customers ({len(rejected)} dirty ones rejected)"


def check_purchases(stack: Stack, erp_url: str, state_url: str, summary: Mapping[str, Any]) -> str:
    """Every paid ERP order is in Connectif or rejected with a reason (not both), with its lines and quantity."""
    from connectif_sync.store import StateStore

    orders = {
        str(o["order_number"]): o
        for o in _query(
            erp_url,
            "SELECT o.order_number, COUNT(l.id) AS lines, SUM(l.quantity) AS quantity FROM orders o "
            "JOIN order_lines l ON l.order_id = o.id WHERE o.status = 'paid' GROUP BY o.order_number",
        )
    }
    with StateStore(state_url) as store:
        rejected = {str(r["key"]): r["reason"] for r in store.rejected("purchases", limit=1_000_000)}
    if not all(rejected.values()):
        raise DistributedRunError("rejected purchases without a reason")
    stored = {str(p["purchaseId"]): p for p in stack.emulator_admin("GET", "/purchases")}
    if set(stored) & set(rejected):
        raise DistributedRunError(f"purchases both sent and rejected: {sorted(set(stored) & set(rejected))[:10]}")
    if set(stored) | set(rejected) != set(orders):
        lost = set(orders) - set(stored) - set(rejected)
        extra = set(stored) - set(orders)
        raise DistributedRunError(f"purchases lost: {sorted(lost)[:10]}; unexpected: {sorted(extra)[:10]}")
    for pid, purchase in stored.items():
        if len(purchase["products"]) != orders[pid]["lines"] or purchase["totalQuantity"] != orders[pid]["quantity"]:
            raise DistributedRunError(f"purchase {pid}: Connectif has {purchase}, the ERP says {orders[pid]}")
    if summary.get("kept"):
        raise DistributedRunError(f"{summary['kept']} purchases were kept for a later run: {summary.get('notes')}")
    return f"Connectif holds exactly the {len(stored)} sendable paid orders as purchases ({len(rejected)} rejected)"


def scenario_pipeline(stack: Stack, timings: Timings) -> list[str]:
    """The real DAGs of dags/ on a sample ERP in PostgreSQL, as the compose deployment runs them.

    Contacts and products first, then purchases (as ``make demo`` does): the purchases DAG upserts missing
    contacts itself, so the contacts are compared with the ERP before the purchases run.
    """
    from sample_erp import DEFAULT_NOW, generate

    erp_url = stack.db_url("erp")
    state_url = stack.db_url("connectif")
    now = DEFAULT_NOW.replace(tzinfo=UTC)
    generated = generate(erp_url, order_days=1.0, now=now, **SAMPLE).as_dict(with_ids=True)
    dirty_customers = {i for ids in generated["dirty"].get("customers", {}).values() for i in ids}
    timings.lap(f"sample ERP in PostgreSQL ({SAMPLE['contacts']} customers)")
    extra_env = {
        "CONNECTIF_SOURCE_URL": erp_url,
        "CONNECTIF_STATE_URL": state_url,
        "CONNECTIF_WAREHOUSE_URL": stack.db_url("warehouse"),
        "CONNECTIF_WORK_DIR": str(stack.workdir / "work"),
        "CONNECTIF_POLL_INTERVAL": "3",
    }
    stack.init_airflow(extra_env)
    timings.lap("airflow init (deploy/init.sh)")
    stack.start_airflow(extra_env)
    stack.wait_airflow_ready()
    timings.lap("airflow components ready")
    # The purchases run covers the sample's day of orders: its hour starts at the sample's "now" and it
    # reaches back 25 hours (the DAG's look-back), so every order is in its window.
    purchases = Trigger("connectif_purchases", {
        "logical_date": now,
        "data_interval": (now, now + timedelta(hours=1)),
        "conf": {"trigger_purchase_event": False, "lookback_hours": 25},
    })
    phases = [[Trigger("connectif_contacts"), Trigger("connectif_products")], [purchases]]
    findings: list[str] = []

    def after_phase(number: int, outcome: RunOutcome) -> None:
        if number == 0 and all(run["state"] == "success" for run in outcome.runs.values()):
            findings.append(check_contacts(stack, erp_url, state_url, dirty_customers))

    with stack.client() as client:
        outcome = trigger_and_watch(stack, client, phases, deferring=("connectif_contacts", "import_file"),
                                    extra_env=extra_env, after_phase=after_phase)
        run = outcome.runs["connectif_purchases"]
        summary = client.xcom("connectif_purchases", run["dag_run_id"], "report", key="summary") or {}
    timings.lap("DAG runs")
    findings[:0] = check_common(stack, outcome)
    findings.append(check_purchases(stack, erp_url, state_url, summary))
    return findings


SCENARIOS: dict[str, Callable[[Stack, Timings], list[str]]] = {"pipeline": scenario_pipeline, "probe": scenario_probe}
DAGS_FOLDERS = {"pipeline": REPO / "dags", "probe": REPO / "tests" / "deploy" / "dags"}
#: Import processing speed of the emulator (rows/s): slow enough that an import waits deferred for a while.
EMULATOR_SPEED = {"pipeline": 100.0, "probe": 40.0}


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP become SystemExit so that ``finally`` blocks stop every process."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(scenario: str, *, keep: bool = False, dags_folder: Path | None = None) -> int:
    timings = Timings()
    workdir = Path(tempfile.mkdtemp(prefix="connectif-distributed-"))
    stack = Stack(workdir, dags_folder=dags_folder or DAGS_FOLDERS[scenario], emulator_speed=EMULATOR_SPEED[scenario])
    ok = False
    code = 0
    try:
        with _stop_on_signals():
            stack.start_postgres(["airflow", "connectif", "warehouse", "erp"])
            stack.start_redis()
            stack.start_emulator()
            timings.lap("PostgreSQL, Redis and the emulator")
            findings = SCENARIOS[scenario](stack, timings)
            ok = True
    except (DistributedRunError, TimeoutError) as exc:
        print(f"[distributed] FAILED: {exc}", file=sys.stderr, flush=True)
        print(f"[distributed] logs: {stack.logs}", file=sys.stderr, flush=True)
        keep = True
    except (KeyboardInterrupt, SystemExit) as exc:
        code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
        print(f"[distributed] interrupted ({code}): stopping everything", file=sys.stderr, flush=True)
        keep = True
    finally:
        stack.stop()
        timings.lap("shutdown")
    for name, seconds in timings.phases:
        print(f"[distributed] {name}: {seconds:.1f}s")
    print(f"[distributed] total: {timings.total():.1f}s")
    if ok:
        for finding in findings:
            print(f"[distributed] OK {finding}")
    if keep:
        print(f"[distributed] kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else (code or 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="pipeline")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) after success")
    parser.add_argument("--dags-folder", type=Path, help="DAGs to run instead of the scenario's (same DAG ids)")
    args = parser.parse_args(argv)
    return run(args.scenario, keep=args.keep, dags_folder=args.dags_folder)


if __name__ == "__main__":
    sys.exit(main())
