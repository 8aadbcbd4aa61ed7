"""Which tasks of a run needed more than one try, and why: read through the REST API, for the demo's summary.

A run that ends in ``success`` after retries is not the same as a clean run (the issue that led to this: a
task failing twice with ``database is locked`` and the summary saying "success"). For every task instance
whose ``try_number`` is above 1 we read its tries (``.../taskInstances/{task}/tries``) and, for each try that
did not succeed, the error its log ends with (``.../logs/{try}``), else the try's state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from demo.airflow_api import AirflowAPIError

#: Longest reason shown per try (the log keeps the whole traceback).
MAX_REASON = 320


class _Client(Protocol):
    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]: ...
    def task_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]: ...
    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> list[Any]: ...


@dataclass(frozen=True)
class FailedTry:
    try_number: int
    state: str | None
    reason: str


@dataclass
class RetriedTask:
    """A task instance that needed more than one try; ``tries`` lists those that did not succeed."""

    task: str
    tries_used: int
    final_state: str | None
    failed: list[FailedTry] = field(default_factory=list)

    def describe(self) -> str:
        head = f"{self.task}: {self.tries_used} tries, ended {self.final_state}"
        if not self.failed:
            return head
        return head + "; " + "; ".join(f"try {f.try_number} {f.state or '?'}: {f.reason}" for f in self.failed)


def failure_reason(entries: Iterable[Any]) -> str | None:
    """The error a try's log ends with: the last exception of Airflow's structured log (``error_detail``), else
    the last ``error``/``critical`` entry, else the last plain line naming an error. ``None`` if none."""
    last_exception: str | None = None
    last_error: str | None = None
    last_line: str | None = None
    for entry in entries:
        if isinstance(entry, dict):
            details = entry.get("error_detail")
            if isinstance(details, list) and details:
                first = details[0] if isinstance(details[0], dict) else {}
                exc_type = first.get("exc_type") or "error"
                exc_value = str(first.get("exc_value") or "").strip()
                last_exception = f"{exc_type}: {exc_value}" if exc_value else str(exc_type)
            level = str(entry.get("level") or "").lower()
            if level in ("error", "critical") and entry.get("event"):
                last_error = str(entry["event"]).strip()
        else:
            line = str(entry).strip()
            if "Error" in line or "Exception" in line or "error:" in line.lower():
                last_line = line
    reason = last_exception or last_error or last_line
    if reason is None:
        return None
    return _short(reason)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def scheduler_reason(
    log_path: Path, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int
) -> str | None:
    """Why the scheduler failed a try, from ``airflow standalone``'s log, for a try whose task log is empty
    (e.g. the task process died before running the task's code): the error line about that task instance
    nearest to where the executor reported the try failed."""
    key = f"dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}', try_number={try_number}, map_index={map_index}"
    ti_text = f"<TaskInstance: {dag_id}.{task_id} {run_id}" + (f" map_index={map_index} [" if map_index >= 0 else " [")
    event: int | None = None
    errors: list[tuple[int, str]] = []
    try:
        with log_path.open(errors="replace") as fh:
            for number, line in enumerate(fh):
                if event is None and key in line and "state failed" in line:
                    event = number
                elif ti_text in line and "[error" in line:
                    message = line.split("[error", 1)[1].lstrip(" ]").split(" [airflow.", 1)[0]
                    message = re.sub(r"(the task instance )?<TaskInstance: [^>]*>", "the task", message)
                    errors.append((number, _short(message)))
    except OSError:
        return None
    if event is None:
        return None
    near = [(abs(number - event), message) for number, message in errors if abs(number - event) <= 500]
    if not near:
        return "the executor reported this try failed (see the scheduler in standalone.log)"
    return "the scheduler says: " + min(near)[1]


def _label(ti: dict[str, Any]) -> str:
    index = ti.get("map_index", -1)
    return f"{ti['task_id']}[{index}]" if index is not None and index >= 0 else str(ti["task_id"])


def retried_tasks(client: _Client, dag_id: str, run_id: str, *, scheduler_log: Path | None = None) -> list[RetriedTask]:
    """Every task instance of the run that used more than one try, with why each earlier try failed (from its
    task log, else from ``scheduler_log``, the scheduler's own log, when given)."""
    out: list[RetriedTask] = []
    for ti in client.task_instances(dag_id, run_id):
        tries = int(ti.get("try_number") or 0)
        if tries <= 1:
            continue
        map_index = int(ti.get("map_index", -1) if ti.get("map_index") is not None else -1)
        task = RetriedTask(task=_label(ti), tries_used=tries, final_state=ti.get("state"))
        # The tries Airflow kept (history + current); a try it kept no record of is still reported.
        kept = client.task_tries(dag_id, run_id, ti["task_id"], map_index)
        recorded = {int(t.get("try_number") or 0): t for t in kept}
        for number in range(1, tries + 1):
            attempt = recorded.get(number) or {}
            state = attempt.get("state") if attempt else ("no record" if number < tries else ti.get("state"))
            if state == "success" or (number == tries and state not in ("failed", "upstream_failed")):
                continue  # the try that worked, or the one still running
            try:
                log = client.task_log(dag_id, run_id, ti["task_id"], number, map_index)
            except (AirflowAPIError, httpx.HTTPError) as exc:  # a missing log must not hide the retry itself
                log = [f"(log unreadable: {exc})"]
            reason = failure_reason(log)
            if reason is None and scheduler_log is not None:
                reason = scheduler_reason(scheduler_log, dag_id, run_id, ti["task_id"], number, map_index)
            if reason is None and attempt and not attempt.get("start_date"):
                reason = "failed before the task's code started (the executor reported it; see standalone.log)"
            elif reason is None:
                reason = "no error in its log (killed, or a lost heartbeat?)"
            task.failed.append(FailedTry(number, state, reason))
        out.append(task)
    return out
