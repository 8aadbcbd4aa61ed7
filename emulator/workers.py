"""Background processing of imports and exports: one at a time per account, in order of creation.

Each account gets a worker thread while it has queued work; it ends when the queue is empty and a new
job starts it again. Progress is written after every batch, so ``GET /imports/{id}`` sees ``success`` and
``errors`` grow while the import is ``inProgress``. Work started before an admin reset notices the store's
new generation and stops without writing (:class:`~emulator.jobs.JobStopped`).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from emulator.exports import ExportRun
from emulator.imports import ImportRun
from emulator.jobs import JobStopped
from emulator.store import now_iso

if TYPE_CHECKING:
    from emulator.state import EmulatorState

log = logging.getLogger("emulator.workers")


class Workers:
    """Starts and tracks the per-account worker threads (the :class:`~emulator.state.JobQueue` of a state)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._active: set[tuple[str, str]] = set()
        self._stopping = threading.Event()

    def resume(self) -> None:
        """Pick up jobs left queued by a previous run (``--state``)."""
        for table in ("imports", "exports"):
            for account in self.state.store.accounts_with_jobs(table, ["queued"]):
                self.kick(table, account)

    def kick(self, table: str, account_id: str) -> None:
        with self._lock:
            if (table, account_id) in self._active or self._stopping.is_set():
                return
            self._active.add((table, account_id))
        thread = threading.Thread(target=self._run, args=(table, account_id), name=f"{table}-{account_id}", daemon=True)
        thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self, table: str, account_id: str) -> None:
        store = self.state.store
        while not self._stopping.is_set():
            with self._lock:
                job = store.oldest_job(table, account_id, "queued")
                if job is None:
                    self._active.discard((table, account_id))
                    return
            try:
                if table == "imports":
                    ImportRun(self.state, job, account_id).run()
                else:
                    ExportRun(self.state, job, account_id).run()
            except JobStopped:
                continue
            except Exception:
                log.exception("%s %s failed", table, job["id"])
                store.update_job(table, job["id"], status="error", finishedAt=now_iso())
        with self._lock:
            self._active.discard((table, account_id))
