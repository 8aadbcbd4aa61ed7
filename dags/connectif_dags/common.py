"""What every Connectif DAG shares: configuration look-up, params, retries, run windows and run summaries.

Nothing here touches a database or a connection when a DAG file is parsed: settings are read inside tasks
(``setting()`` calls ``Variable.get`` at run time only).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param

from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.models import DEFAULT_RATE_LIMIT_PER_MINUTE
from connectif_sync.contract import RunState, RunSummary, SyncObject

log = logging.getLogger("airflow.task")

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = Path(os.environ.get("CONNECTIF_DEMO_DIR") or REPO / ".demo")
CONN_ID = "connectif_default"
#: ``run_immediately`` of every cron schedule: a DAG unpaused for the first time waits for its next scheduled
#: time (trigger it to run now). Airflow's default, despite its ``False``, runs the latest past time when it is
#: within a tenth of the schedule's period (2.4 hours for a daily sync): a run nobody asked for, racing the one
#: a user (or the deployment check, ``deploy/distributed.py``) triggers on unpausing.
FIRST_RUN_AT_NEXT_TIME = timedelta(0)


def cron_schedule(expression: str, **kwargs: Any) -> CronTriggerTimetable:
    """A cron trigger in UTC whose first run, once unpaused, is its next time (:data:`FIRST_RUN_AT_NEXT_TIME`)."""
    return CronTriggerTimetable(expression, timezone="UTC", run_immediately=FIRST_RUN_AT_NEXT_TIME, **kwargs)


IMPORTS_POOL = "connectif_imports"
EXPORTS_POOL = "connectif_exports"
#: One slot: the purchases ``send`` task of one data interval at a time, scheduled runs and backfills alike.
#: Backfills created by REST or the CLI start up to 10 runs at once whatever the DAG's ``max_active_runs``
#: says; this pool keeps them sending one interval after the other, broadly oldest first. Give it more slots to
#: send several intervals at once (Admin -> Pools).
PURCHASES_POOL = "connectif_purchases"
#: Seconds between import status polls (the trigger backs off while an import is queued).
POLL_INTERVAL = float(os.environ.get("CONNECTIF_POLL_INTERVAL") or 15.0)

#: ``setting(name)``: Airflow Variable ``connectif_<name>``, else env ``CONNECTIF_<NAME>``, else this default.
DEFAULTS: dict[str, str] = {
    "source_url": f"sqlite:///{DEMO_DIR / 'erp.sqlite'}",
    "state_url": f"sqlite:///{DEMO_DIR / 'state.sqlite'}",
    "warehouse_url": f"sqlite:///{DEMO_DIR / 'warehouse.sqlite'}",
    "work_dir": str(DEMO_DIR / "work"),
    "mappings_dir": "",
    # Purchase runs that leave the param empty: "true"/"false", or empty for "on, except in backfills".
    "trigger_purchase_event": "",
}

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-engineering",
    "retries": 3,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=15),
}

TAGS = ["connectif"]

#: ``allowed_run_types`` of the DAGs that sync the ERP's *current state* (contacts, products, coupons,
#: erasure): every run type but ``backfill``. Their runs read what the ERP holds now, whatever the run's date,
#: so a backfill would only repeat today's sync once per past date. Airflow then refuses a backfill: the
#: REST API answers 400 "Dag with dag_id: '...' does not allow backfill runs", `airflow backfill create`
#: exits with that message, and the UI's Trigger dialog offers no Backfill. (Strings, so that DAG files need
#: no private import; Airflow converts them to its ``DagRunType``.)
CURRENT_STATE_RUN_TYPES: tuple[str, ...] = (
    "scheduled",
    "manual",
    "operator_triggered",
    "asset_triggered",
    "asset_materialization",
)


def setting(name: str) -> str:
    """A configuration value, read at run time (never at parse time)."""
    from airflow.sdk import Variable

    if name not in DEFAULTS:
        raise KeyError(f"unknown Connectif setting {name!r}; known: {sorted(DEFAULTS)}")
    value = Variable.get(f"connectif_{name}", default=None)
    if value in (None, ""):
        value = os.environ.get(f"CONNECTIF_{name.upper()}") or DEFAULTS[name]
    return str(value)


def bool_setting(name: str) -> bool | None:
    """A yes/no setting; ``None`` when it is empty (the caller's own default applies)."""
    value = setting(name).strip().lower()
    if value == "":
        return None
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"the Variable connectif_{name} is {value!r}: use true, false, or leave it empty")


def mapping_for(obj: str) -> str | None:
    """The user's mapping file for ``obj`` (``<mappings_dir>/<obj>.yaml``), or None for the shipped one."""
    folder = setting("mappings_dir")
    if not folder:
        return None
    path = Path(folder) / f"{obj}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the Variable connectif_mappings_dir ({folder}) must hold {obj}.yaml "
            "(copy include/connectif_sync/mappings/ and adapt it)"
        )
    return str(path)


def upload_ledger() -> Any:
    """The state store, as the import operator's record of uploads (no duplicate import across runs)."""
    from connectif_sync.store import StateStore

    return StateStore(setting("state_url"))


def dry_run_param() -> Param:
    return Param(
        False,
        type="boolean",
        title="Dry run",
        description="Plan only: what would be sent, how many files and API requests, how long it would take. "
        "Nothing is written anywhere (no upload, no state, no ERP update).",
    )


def full_resync_param() -> Param:
    return Param(
        False,
        type="boolean",
        title="Full resync",
        description="Ignore what Connectif already confirmed and send every valid row again.",
    )


def run_window(context: Any, default_span: timedelta) -> tuple[datetime, datetime]:
    """The run's data interval; for a manual run without one, ``default_span`` ending at the run's time."""
    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return _utc(start), _utc(end)
    dag_run = context.get("dag_run")
    anchor = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None) or datetime.now(UTC)
    end = _utc(anchor)
    return end - default_span, end


def _utc(value: datetime) -> datetime:
    value = datetime.fromisoformat(str(value)) if not isinstance(value, datetime) else value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def run_dir(context: Any) -> Path:
    """A folder of this run under the work dir (chunk files, manifests); removed when the run reports."""
    ti = context["ti"]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(ti.run_id))
    path = Path(setting("work_dir")) / ti.dag_id / safe
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_run_dir(context: Any) -> None:
    ti = context["ti"]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(ti.run_id))
    shutil.rmtree(Path(setting("work_dir")) / ti.dag_id / safe, ignore_errors=True)


def rate_limit_per_minute(conn_id: str = CONN_ID) -> int:
    """The shared budget the connection allows (its ``rate_limit_per_minute`` extra, else the provider's
    default), read at run time so that dry-run estimates match what the run will really be allowed."""
    try:
        return ConnectifHook(conn_id).get_settings().rate_limit_per_minute
    except Exception as exc:  # a dry run still plans without a usable connection; the real run fails on it
        log.warning("Connection %r unusable (%s); estimating at the default %d/min", conn_id, exc,
                    DEFAULT_RATE_LIMIT_PER_MINUTE)  # fmt: skip
        return DEFAULT_RATE_LIMIT_PER_MINUTE


def import_summaries(ti: Any, task_id: str, count: int) -> list[dict[str, Any]]:
    """The summaries the mapped import tasks returned (those that failed returned none)."""
    if count == 0:
        return []
    pulled = ti.xcom_pull(task_ids=task_id, map_indexes=list(range(count)))
    if pulled is None:
        return []
    if isinstance(pulled, dict):
        pulled = [pulled]
    return [dict(s) for s in pulled if s]


def upstream_result(context: Any, obj: str, task_id: str, key: str | None = None) -> Any:
    """What ``task_id`` returned (or pushed under ``key``); when it failed and left nothing, publish a summary
    that says so and fail: a ``report`` task runs whatever happened before it (trigger rule ``all_done``)."""
    from airflow.sdk.exceptions import AirflowFailException

    ti = context["ti"]
    value = ti.xcom_pull(task_ids=task_id, key=key) if key else ti.xcom_pull(task_ids=task_id)
    if value is not None:
        return value
    note = f"{task_id} failed: nothing more was sent; its log says why (the next run takes the rows again)"
    failed = new_summary(context, SyncObject(obj), state=RunState.FAILED, notes=[note], extra={"failed": task_id})
    publish_summary(context, failed)
    raise AirflowFailException(f"{obj}: {task_id} failed (see its log); the summary says what was done")


def new_summary(context: Any, obj: SyncObject, **fields: Any) -> RunSummary:
    """A :class:`RunSummary` of this Airflow run (``dag_id``/``run_id`` from the running task)."""
    ti = context["ti"]
    return RunSummary(dag_id=ti.dag_id, run_id=ti.run_id, object=obj, **fields)


def publish_summary(context: Any, summary: RunSummary | dict[str, Any]) -> dict[str, Any]:
    """Log the run summary, push it as the one XCom ``summary`` and keep it in the run history.

    The run history (state store table ``connectif_sync_run_history``) is what the Connectif pages of the
    Airflow UI read: it survives XCom clean-up. A dry run writes nothing but this record. A plain dict (the
    object-specific summaries) is read as a :class:`RunSummary`; its own keys stay at the top level.
    """
    from connectif_sync.store import StateStore

    if isinstance(summary, dict):
        ti = context["ti"]
        summary = RunSummary.from_dict({"dag_id": ti.dag_id, "run_id": ti.run_id, **summary})

    data = json.loads(json.dumps(summary.as_dict(), default=str))
    log.info("Connectif sync summary:\n%s", json.dumps(data, indent=2, sort_keys=True))
    context["ti"].xcom_push(key="summary", value=data)
    with StateStore(setting("state_url")) as store:
        store.record_run_summary(summary)
    return data


def asset_extra(summary: RunSummary) -> dict[str, Any]:
    """What an Asset event of a sync carries: the run's counts, for consumers scheduled on the Asset."""
    return {
        "object": summary.object.value,
        "run_id": summary.run_id,
        **{name: getattr(summary, name) for name in ("to_send", "sent", "new", "changed", "unchanged", "rejected")},
        "imports": summary.imports,
    }
