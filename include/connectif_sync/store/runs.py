"""Runs: the library's runs (watermarks, files written, reports) and the Airflow runs' summaries.

Why a module of its own: where an incremental run starts depends only on earlier runs and on what is still
pending, and the monitoring pages read the run history without touching the confirmed state.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectif_sync.chunk import ChunkFile
from connectif_sync.contract import RunSummary
from connectif_sync.store.base import StoreBase
from connectif_sync.store.rejected import KEEP_REJECTED_RUNS
from connectif_sync.store.schema import (
    _now,
    _run_clock,
    files_table,
    parse_ts,
    pending_table,
    rejected_table,
    run_history_table,
    runs_table,
)


@dataclass(frozen=True)
class RunHistoryEntry:
    """One row of the run history: an Airflow run's state and the counts the pages chart."""

    dag_id: str
    run_id: str
    object: str
    state: str
    dry_run: bool
    library_run_id: str | None
    recorded_at: datetime
    to_send: int
    sent: int
    changed: int
    unchanged: int
    rejected: int
    api_requests: int | None


class RunLog(StoreBase):
    """Starting and finishing library runs; recording and reading the Airflow runs' summaries."""

    def next_since(self, obj: str, lookback: timedelta) -> datetime | None:
        """Where an incremental run of ``obj`` starts, or None when it must scan everything.

        The high-water mark of the last finished run, held back by the oldest row still pending (in a file
        not yet confirmed, or rejected by Connectif), minus ``lookback`` for rows committed late in the source.
        """
        if self._missing:
            return None
        with self.engine.connect() as conn:
            high = conn.execute(
                sa.select(runs_table.c.high_water)
                .where(runs_table.c.object == obj, runs_table.c.finished_at.is_not(None), runs_table.c.mode != "plan")
                .order_by(runs_table.c.finished_at.desc(), runs_table.c.started_at.desc())
                .limit(1)
            ).scalar()
            if high is None:
                return None
            files_min = conn.execute(
                sa.select(sa.func.min(files_table.c.min_updated_at)).where(
                    files_table.c.object == obj, files_table.c.status == "pending"
                )
            ).scalar()
            pending_min = conn.execute(
                sa.select(sa.func.min(pending_table.c.source_updated_at)).where(pending_table.c.object == obj)
            ).scalar()
        marks = [m for m in (high, files_min, pending_min) if m]
        return parse_ts(min(marks)) - lookback

    def begin_run(self, obj: str, mode: str, since: datetime | None, run_id: str | None = None) -> str:
        """Start a run: older unconfirmed files are superseded (this run re-extracts their rows) and the
        rows Connectif rejected last time are cleared (this run sends them again)."""
        self._write()
        run_id = run_id or f"{obj}-{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.engine.begin() as conn:
            conn.execute(
                files_table.update()
                .where(files_table.c.object == obj, files_table.c.status == "pending")
                .values(status="superseded")
            )
            conn.execute(pending_table.delete().where(pending_table.c.object == obj))
            conn.execute(
                runs_table.insert().values(
                    run_id=run_id,
                    object=obj,
                    mode=mode,
                    started_at=_run_clock(),
                    since=since.strftime("%Y-%m-%d %H:%M:%S") if since else None,
                )
            )
        return run_id

    def finish_run(
        self, run_id: str, *, files: list[ChunkFile], high_water: str | None, report: dict[str, Any]
    ) -> None:
        self._write()
        with self.engine.begin() as conn:
            obj = conn.execute(sa.select(runs_table.c.object).where(runs_table.c.run_id == run_id)).scalar_one()
            if high_water is None:  # nothing extracted: keep the previous mark
                high_water = conn.execute(
                    sa.select(runs_table.c.high_water)
                    .where(runs_table.c.object == obj, runs_table.c.high_water.is_not(None))
                    .order_by(runs_table.c.started_at.desc())
                    .limit(1)
                ).scalar()
            now = _now()
            if files:
                paths = [str(Path(f.path).resolve()) for f in files]
                conn.execute(files_table.delete().where(files_table.c.path.in_(paths)))  # same out_dir reused
                conn.execute(
                    files_table.insert(),
                    [
                        {
                            "path": str(Path(f.path).resolve()),
                            "object": f.object,
                            "run_id": run_id,
                            "partition": f.partition,
                            "rows": f.rows,
                            "bytes": f.bytes,
                            "min_updated_at": f.min_updated_at,
                            "status": "pending",
                            "created_at": now,
                        }
                        for f in files
                    ],
                )
            conn.execute(
                runs_table.update()
                .where(runs_table.c.run_id == run_id)
                .values(finished_at=_run_clock(), high_water=high_water, report=json.dumps(report))
            )
            keep = [
                r[0]
                for r in conn.execute(
                    sa.select(runs_table.c.run_id)
                    .where(runs_table.c.object == obj)
                    .order_by(runs_table.c.started_at.desc())
                    .limit(KEEP_REJECTED_RUNS)
                )
            ]
            if keep:
                conn.execute(
                    rejected_table.delete().where(rejected_table.c.object == obj, rejected_table.c.run_id.not_in(keep))
                )

    def runs(self, obj: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs (newest first) with their reports."""
        if self._missing:
            return []
        q = sa.select(runs_table).order_by(runs_table.c.started_at.desc()).limit(limit)
        if obj:
            q = q.where(runs_table.c.object == obj)
        with self.engine.connect() as conn:
            out = [dict(r._mapping) for r in conn.execute(q)]
        for r in out:
            r["report"] = json.loads(r["report"]) if r["report"] else None
        return out

    # ---------------------------------------------------------------------------------- run history

    def record_run_summary(self, summary: RunSummary) -> None:
        """Keep one Airflow run's summary (the run's ``report`` task calls this; a re-run replaces it)."""
        self._write()
        row = {
            "dag_id": summary.dag_id,
            "run_id": summary.run_id,
            "object": summary.object.value,
            "state": summary.state.value,
            "dry_run": summary.dry_run,
            "library_run_id": summary.library_run_id,
            "recorded_at": _run_clock(),
            "to_send": summary.to_send,
            "sent": summary.sent,
            "changed": summary.changed,
            "unchanged": summary.unchanged,
            "rejected": summary.rejected,
            "api_requests": summary.requests_spent,
            "summary": json.dumps(summary.as_dict(), default=str),
        }
        t = run_history_table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.dag_id == summary.dag_id, t.c.run_id == summary.run_id))
            conn.execute(t.insert().values(**row))

    def run_summary(self, dag_id: str, run_id: str) -> RunSummary | None:
        """The summary one Airflow run's ``report`` task recorded, or None (not reported yet, or another DAG)."""
        if self._missing:
            return None
        t = run_history_table
        try:
            with self.engine.connect() as conn:
                text = conn.execute(sa.select(t.c.summary).where(t.c.dag_id == dag_id, t.c.run_id == run_id)).scalar()
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before the history, read-only
            return None
        return RunSummary.from_dict(json.loads(text)) if text else None

    def run_history(self, obj: str, limit: int = 30) -> list[RunHistoryEntry]:
        """The latest ``limit`` runs of ``obj`` (newest first), without their full summaries."""
        if self._missing:
            return []
        t = run_history_table
        q = (
            sa.select(
                t.c.dag_id, t.c.run_id, t.c.object, t.c.state, t.c.dry_run, t.c.library_run_id, t.c.recorded_at,
                t.c.to_send, t.c.sent, t.c.changed, t.c.unchanged, t.c.rejected, t.c.api_requests,
            )
            .where(t.c.object == obj)
            .order_by(t.c.recorded_at.desc())
            .limit(limit)
        )  # fmt: skip
        try:
            with self.engine.connect() as conn:
                return [RunHistoryEntry(**r._mapping) for r in conn.execute(q)]
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return []
