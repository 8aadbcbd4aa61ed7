"""What the pages show, read where the API server can reach it: settings, Airflow's DAG runs, the state store,
the shared rate-limit bucket and (cached) the account's import queue.

Nothing here goes through the Task SDK: the plugin runs in the API server, which reads Variables, Connections
and DAG runs from the metadata database directly.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from connectif_provider.hooks.connectif import ConnectifHook, settings_from_connection
from connectif_provider.models import ImportStatus, parse_import_status
from connectif_sync.contract import SyncObject
from connectif_sync.store import StateStore

CONN_ID = "connectif_default"
#: Seconds the account's import queue is cached: the page costs at most one list request per minute.
ACCOUNT_CACHE_SECONDS = float(os.environ.get("CONNECTIF_UI_CACHE_SECONDS") or 60.0)


#: Seconds a setting read from a Variable is reused: each page reads two, and a Variable read costs a metadata
#: DB query (tens of ms on a loaded machine). A changed Variable shows within this time.
SETTINGS_CACHE_SECONDS = 10.0
_settings_cache: dict[str, tuple[float, str | None]] = {}


def _variable(name: str) -> str | None:
    """Airflow Variable ``connectif_<name>`` (cached for :data:`SETTINGS_CACHE_SECONDS`), else env
    ``CONNECTIF_<NAME>`` (as the DAGs read their settings)."""
    cached = _settings_cache.get(name)
    if cached is not None and time.monotonic() - cached[0] < SETTINGS_CACHE_SECONDS:
        value: Any = cached[1]
    else:
        value = _read_variable(name)
        _settings_cache[name] = (time.monotonic(), value)
    if value in (None, ""):
        value = os.environ.get(f"CONNECTIF_{name.upper()}")
    return None if value in (None, "") else str(value)


def _read_variable(name: str) -> str | None:
    try:
        from airflow.models.variable import Variable

        value = Variable.get(f"connectif_{name}", default_var=None)
    except Exception:  # no metadata database (e.g. a bare test app): the environment still counts
        return None
    return None if value in (None, "") else str(value)


def state_url() -> str:
    """The sync state store: Variable ``connectif_state_url``, env, else the DAGs' default (``.demo`` next to
    the DAGs folder, as ``dags/connectif_dags/common.py`` says)."""
    url = _variable("state_url")
    if url:
        return url
    demo = os.environ.get("CONNECTIF_DEMO_DIR")
    if not demo:
        from airflow.configuration import conf

        demo = str(Path(conf.get("core", "dags_folder")).resolve().parent / ".demo")
    return f"sqlite:///{Path(demo) / 'state.sqlite'}"


def mask_emails_enabled() -> bool:
    """Setting ``connectif_ui_mask_emails`` (Variable or env): show ``j***@example.com`` instead of emails."""
    return (_variable("ui_mask_emails") or "false").strip().lower() in ("1", "true", "yes", "on")


_EMAIL = re.compile(r"([^\s@,;:=<>\"'()]{1,2})[^\s@,;:=<>\"'()]*@([^\s@,;<>\"'()]+)")


def mask_emails(text: Any) -> Any:
    """Every email address in ``text`` with its local part hidden but for its first character(s)."""
    if not isinstance(text, str):
        return text
    return _EMAIL.sub(lambda m: f"{m.group(1)[0]}***@{m.group(2)}", text)


# ------------------------------------------------------------------------------------------ state store

_stores: dict[str, StateStore] = {}
_stores_lock = threading.Lock()


def store() -> StateStore:
    """A read-only state store, kept per URL (its connection pool is reused by every request)."""
    url = state_url()
    with _stores_lock:
        cached = _stores.get(url)
        if cached is None or cached._missing:  # a store created since: open it again
            if cached is not None:
                cached.close()
            cached = StateStore(url, readonly=True)
            _stores[url] = cached
        return cached


# ----------------------------------------------------------------------------------------- Airflow runs


class Freshness(StrEnum):
    """How an object's syncs keep up with their schedule."""

    ON_TIME = "on time"
    LATE = "late"
    FAILING = "failing"
    PAUSED = "paused"
    NEVER = "never run"


@dataclass
class DagStatus:
    """An object's DAG as Airflow sees it: last run, last success, schedule and freshness."""

    dag_id: str
    exists: bool = False
    paused: bool = False
    schedule: str | None = None
    last_run_id: str | None = None
    last_state: str | None = None
    last_time: datetime | None = None
    last_success: datetime | None = None
    last_finished_state: str | None = None
    freshness: str = Freshness.NEVER
    expected: datetime | None = None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def previous_fire(schedule: str | None, now: datetime) -> tuple[datetime, timedelta] | None:
    """The latest time a cron ``schedule`` fired before ``now`` and its period, or None (not a cron)."""
    if not schedule:
        return None
    try:
        from croniter import croniter

        it = croniter(schedule.strip(), now)
        prev = it.get_prev(datetime)
        nxt = croniter(schedule.strip(), prev).get_next(datetime)
    except Exception:  # an Asset schedule, a timedelta, "None"...: no freshness rule
        return None
    return _utc(prev) or now, nxt - prev


def judge_freshness(status: DagStatus, now: datetime) -> str:
    """failing: the latest finished run failed; late: no successful run since the schedule last fired (after a
    grace of a quarter period, 15 min to 2 h); paused; never run; else on time."""
    if not status.exists or (status.last_state is None and status.last_success is None):
        return Freshness.PAUSED if status.paused else Freshness.NEVER
    if status.last_finished_state == "failed":
        return Freshness.FAILING
    if status.paused:
        return Freshness.PAUSED
    fired = previous_fire(status.schedule, now)
    if fired is None:
        return Freshness.ON_TIME
    prev, period = fired
    status.expected = prev
    grace = min(max(period / 4, timedelta(minutes=15)), timedelta(hours=2))
    if now > prev + grace and (status.last_success is None or status.last_success < prev - timedelta(minutes=1)):
        return Freshness.LATE
    return Freshness.ON_TIME


def dag_statuses(dag_ids: list[str]) -> dict[str, DagStatus]:
    """Each DAG's last run, last success and freshness, from Airflow's metadata database (four queries for all
    the DAGs: the page's budget is 300 ms on a loaded machine)."""
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    now = datetime.now(UTC)
    out = {d: DagStatus(dag_id=d) for d in dag_ids}

    def latest(*where: Any) -> Any:
        """Each DAG's newest run (matching ``where``): a window over ``(dag_id, run_after)``."""
        rank = func.row_number().over(partition_by=DagRun.dag_id, order_by=DagRun.run_after.desc()).label("rank")
        inner = (
            select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.run_after, DagRun.end_date, rank)
            .where(DagRun.dag_id.in_(dag_ids), *where)
            .subquery()
        )
        return select(inner).where(inner.c.rank == 1)

    with create_session() as session:
        for model in session.scalars(select(DagModel).where(DagModel.dag_id.in_(dag_ids))):
            s = out[model.dag_id]
            s.exists, s.paused = True, bool(model.is_paused)
            s.schedule = model.timetable_summary
        for last in session.execute(latest()):
            s = out[last.dag_id]
            s.last_run_id, s.last_state = last.run_id, str(getattr(last.state, "value", last.state))
            s.last_time = _utc(last.end_date) or _utc(last.run_after)
        for last in session.execute(latest(DagRun.state.in_(["success", "failed"]))):
            out[last.dag_id].last_finished_state = str(getattr(last.state, "value", last.state))
        for last in session.execute(latest(DagRun.state == "success")):
            out[last.dag_id].last_success = _utc(last.run_after)
    for s in out.values():
        s.freshness = judge_freshness(s, now)
    return out


def dag_run_state(dag_id: str, run_id: str) -> str | None:
    """The Airflow state of one DAG run, or None when there is no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    return None if state is None else str(getattr(state, "value", state))


# -------------------------------------------------------------------------------------------- account


@dataclass
class AccountStatus:
    """The account's import queue (cached) and the shared bucket's last hour."""

    queued: int | None = None
    in_progress: int | None = None
    checked_at: datetime | None = None
    error: str | None = None
    limit_per_window: int | None = None
    window_seconds: float | None = None
    usage: list[tuple[int, int, int]] = field(default_factory=list)  # (minute, requests, 429s)

    @property
    def requests_last_hour(self) -> int:
        return sum(r for _, r, _ in self.usage)

    @property
    def limited_last_hour(self) -> int:
        return sum(lim for _, _, lim in self.usage)


_account_cache: dict[str, tuple[float, AccountStatus]] = {}
_account_lock = threading.Lock()


def _connection_settings(conn_id: str) -> Any:
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets(conn_id)
    return settings_from_connection(conn, conn.extra_dejson)


def _import_queue(settings: Any, conn_id: str) -> tuple[int, int]:
    """(queued, in progress) from the newest imports; stops at 100 finished ones (Connectif works in order)."""
    hook = ConnectifHook(conn_id)
    hook._settings = settings  # read by the API server from the metadata DB, not through the Task SDK
    queued = running = terminal = 0
    try:
        for item in hook.list_imports(limit=100):
            try:
                status = parse_import_status(item.get("status"))
            except ValueError:
                continue
            if status is ImportStatus.QUEUED:
                queued += 1
            elif status is ImportStatus.IN_PROGRESS:
                running += 1
            else:
                terminal += 1
                if terminal >= 100:
                    break
    finally:
        hook.close()
    return queued, running


def account_status(conn_id: str = CONN_ID) -> AccountStatus:
    """The account block of the page; the API is asked at most once per :data:`ACCOUNT_CACHE_SECONDS`."""
    status = AccountStatus()
    try:
        settings = _connection_settings(conn_id)
    except Exception as exc:
        status.error = f"connection {conn_id!r}: {exc}"
        return status
    with _account_lock:
        cached = _account_cache.get(conn_id)
        fresh = cached is not None and time.monotonic() - cached[0] < ACCOUNT_CACHE_SECONDS
    if cached is not None and fresh:
        prev = cached[1]
        status.queued, status.in_progress, status.checked_at, status.error = (
            prev.queued, prev.in_progress, prev.checked_at, prev.error
        )  # fmt: skip
    else:
        try:
            status.queued, status.in_progress = _import_queue(settings, conn_id)
            status.checked_at = datetime.now(UTC)
        except Exception as exc:
            status.error = f"import queue: {exc}"
        with _account_lock:
            _account_cache[conn_id] = (time.monotonic(), status)
    limiter = settings.limiter()  # read after the queue request, so the chart includes it
    status.limit_per_window, status.window_seconds = limiter.limit, limiter.window
    try:
        status.usage = [(u.minute, u.requests, u.limited) for u in limiter.usage(60)]
    except Exception as exc:
        status.error = f"rate-limit bucket {settings.rate_limit_backend.split('@')[-1]}: {exc}"
    return status


def objects() -> list[SyncObject]:
    return list(SyncObject)
