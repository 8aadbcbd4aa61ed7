"""Deferrable waits on Connectif imports, exports and queue slots, run by the triggerer.

Triggers only ever GET. Each request goes through :class:`ConnectifHook`'s async client, so it takes its
token from the deployment's shared bucket and is retried on 5xx, 429 and dropped connections; a poll that
still fails is logged and the trigger keeps waiting (until its deadline) rather than failing the task.
Events are dicts with a ``status``: ``success``, ``error`` or ``timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from connectif_provider.exceptions import (
    ConnectifError,
    ConnectifRateLimitedError,
    ConnectifServerError,
    ConnectifTransportError,
)
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.models import (
    MAX_QUEUED_EXPORTS,
    MAX_QUEUED_IMPORTS,
    ExportStatus,
    ImportStatus,
    parse_export_status,
    parse_import_status,
)

_TRANSIENT = (ConnectifRateLimitedError, ConnectifServerError, ConnectifTransportError)
#: While an import waits in the queue behind others, the interval grows by this factor per poll.
QUEUED_BACKOFF_FACTOR = 1.5
#: Seconds before a trigger's first poll.
FIRST_POLL_DELAY = 1.0


def progress_message(resource: dict[str, Any]) -> str:
    """``completed X of Y (Z%)`` from an import's success + errors over total."""
    done = int(resource.get("success") or 0) + int(resource.get("errors") or 0)
    total = int(resource.get("total") or 0)
    pct = (100.0 * done / total) if total else 0.0
    return f"completed {done} of {total} ({pct:.1f}%)"


class _PollingTrigger(BaseTrigger):
    """Shared loop: deadline, transient-error tolerance and a poll interval that backs off while queued."""

    def __init__(
        self,
        *,
        connectif_conn_id: str = ConnectifHook.default_conn_name,
        poll_interval: float = 30.0,
        max_poll_interval: float | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.connectif_conn_id = connectif_conn_id
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval or min(poll_interval * 10, max(poll_interval, 600.0)))
        self.deadline = deadline

    def _common_kwargs(self) -> dict[str, Any]:
        return {
            "connectif_conn_id": self.connectif_conn_id,
            "poll_interval": self.poll_interval,
            "max_poll_interval": self.max_poll_interval,
            "deadline": self.deadline,
        }

    def _time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    async def _first_wait(self) -> None:
        """
        The first poll comes ``FIRST_POLL_DELAY`` in (or one interval, if shorter), not at once: the operator
        has just created or read the resource, and a small import is often done within that second.
        """
        await self._sleep(min(self.poll_interval, FIRST_POLL_DELAY))

    async def _sleep(self, interval: float) -> None:
        left = self._time_left()
        await asyncio.sleep(max(0.0, min(interval, left) if left is not None else interval))


class ConnectifImportTrigger(_PollingTrigger):
    """
    Wait until every import in ``import_ids`` is terminal.

    Fires ``{"status": "success", "imports": [...]}`` when all are ``finished``;
    ``{"status": "error", "message", "imports"}`` as soon as one ends ``error``/``cancelled`` (or cannot be
    read: unknown id, lost permission); ``{"status": "timeout", "message", "imports"}`` at ``deadline``.
    """

    def __init__(self, *, import_ids: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not import_ids:
            raise ValueError("ConnectifImportTrigger needs at least one import id")
        self.import_ids = [str(i) for i in import_ids]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "connectif_provider.triggers.connectif.ConnectifImportTrigger",
            {"import_ids": self.import_ids, **self._common_kwargs()},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ConnectifHook(self.connectif_conn_id)
        latest: dict[str, dict[str, Any]] = {}
        interval = self.poll_interval
        await self._first_wait()
        while True:
            left = self._time_left()
            if left is not None and left <= 0:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "message": f"Imports {self._pending(latest)} were not finished at the deadline",
                        "imports": list(latest.values()),
                    }
                )
                return
            try:
                for import_id in self._pending(latest):
                    latest[import_id] = await hook.aget_import(import_id)
            except _TRANSIENT as exc:
                self.log.warning("Polling Connectif failed, will try again: %s", exc)
                await self._sleep(interval)
                continue
            except ConnectifError as exc:
                yield TriggerEvent({"status": "error", "message": str(exc), "imports": list(latest.values())})
                return
            statuses = {i: parse_import_status(r.get("status")) for i, r in latest.items()}
            failed = [i for i, s in statuses.items() if s in (ImportStatus.ERROR, ImportStatus.CANCELLED)]
            if failed:
                details = ", ".join(f"{i} is {statuses[i].value}" for i in failed)
                yield TriggerEvent(
                    {"status": "error", "message": f"Import {details}", "imports": list(latest.values())}
                )
                return
            if all(s is ImportStatus.FINISHED for s in statuses.values()):
                for resource in latest.values():
                    self.log.info("Import %s %s", resource.get("id"), progress_message(resource))
                yield TriggerEvent({"status": "success", "imports": [latest[i] for i in self.import_ids]})
                return
            if any(s is ImportStatus.IN_PROGRESS for s in statuses.values()):
                interval = self.poll_interval
                for import_id, status in statuses.items():
                    if status is ImportStatus.IN_PROGRESS:
                        self.log.info("Import %s %s", import_id, progress_message(latest[import_id]))
                await self._sleep(interval)
            else:
                self.log.info("Imports %s queued behind others; next poll in %.0f s", self._pending(latest), interval)
                await self._sleep(interval)
                interval = min(interval * QUEUED_BACKOFF_FACTOR, self.max_poll_interval)

    def _pending(self, latest: dict[str, dict[str, Any]]) -> list[str]:
        return [
            i
            for i in self.import_ids
            if i not in latest or parse_import_status(latest[i].get("status")) is not ImportStatus.FINISHED
        ]


class ConnectifExportTrigger(_PollingTrigger):
    """Wait until every export in ``export_ids`` is ``finished`` (events as for imports)."""

    def __init__(self, *, export_ids: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not export_ids:
            raise ValueError("ConnectifExportTrigger needs at least one export id")
        self.export_ids = [str(i) for i in export_ids]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "connectif_provider.triggers.connectif.ConnectifExportTrigger",
            {"export_ids": self.export_ids, **self._common_kwargs()},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ConnectifHook(self.connectif_conn_id)
        latest: dict[str, dict[str, Any]] = {}
        interval = self.poll_interval
        await self._first_wait()
        while True:
            pending = [
                i
                for i in self.export_ids
                if i not in latest or parse_export_status(latest[i].get("status")) is not ExportStatus.FINISHED
            ]
            left = self._time_left()
            if left is not None and left <= 0:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "message": f"Exports {pending} were not finished at the deadline",
                        "exports": list(latest.values()),
                    }
                )
                return
            try:
                for export_id in pending:
                    latest[export_id] = await hook.aget_export(export_id)
            except _TRANSIENT as exc:
                self.log.warning("Polling Connectif failed, will try again: %s", exc)
                await self._sleep(interval)
                continue
            except ConnectifError as exc:
                yield TriggerEvent({"status": "error", "message": str(exc), "exports": list(latest.values())})
                return
            statuses = {i: parse_export_status(r.get("status")) for i, r in latest.items()}
            failed = [i for i, s in statuses.items() if s is ExportStatus.ERROR]
            if failed:
                yield TriggerEvent(
                    {
                        "status": "error",
                        "message": f"Exports {failed} ended in error",
                        "exports": list(latest.values()),
                    }
                )
                return
            if all(s is ExportStatus.FINISHED for s in statuses.values()):
                yield TriggerEvent({"status": "success", "exports": [latest[i] for i in self.export_ids]})
                return
            if any(s is ExportStatus.IN_PROGRESS for s in statuses.values()):
                interval = self.poll_interval
                for export_id, status in statuses.items():
                    if status is ExportStatus.IN_PROGRESS:
                        res = latest[export_id]
                        self.log.info("Export %s progress %s of %s", export_id, res.get("progress"), res.get("total"))
                await self._sleep(interval)
            else:
                await self._sleep(interval)
                interval = min(interval * QUEUED_BACKOFF_FACTOR, self.max_poll_interval)


class ConnectifQueueSlotTrigger(_PollingTrigger):
    """
    Wait until the account has a free import (``kind="imports"``, 10) or export (``"exports"``, 5) slot.

    Used after E0401/E0301 so that a full queue costs a deferred wait, not a failed task or a held worker.
    Fires ``{"status": "success", "active": n}`` or ``{"status": "timeout", ...}``.
    """

    def __init__(self, *, kind: str, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("imports", "exports"):
            raise ValueError(f"kind must be 'imports' or 'exports', got {kind!r}")
        self.kind = kind
        self.limit = int(limit or (MAX_QUEUED_IMPORTS if kind == "imports" else MAX_QUEUED_EXPORTS))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "connectif_provider.triggers.connectif.ConnectifQueueSlotTrigger",
            {"kind": self.kind, "limit": self.limit, **self._common_kwargs()},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ConnectifHook(self.connectif_conn_id)
        interval = self.poll_interval
        await self._first_wait()
        while True:
            left = self._time_left()
            if left is not None and left <= 0:
                yield TriggerEvent(
                    {"status": "timeout", "message": f"No free Connectif {self.kind} slot before the deadline"}
                )
                return
            try:
                if self.kind == "imports":
                    active = await hook.acount_active_imports()
                else:
                    active = await hook.acount_active_exports()
            except _TRANSIENT as exc:
                self.log.warning("Polling Connectif failed, will try again: %s", exc)
                await self._sleep(interval)
                continue
            except ConnectifError as exc:
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            if active < self.limit:
                yield TriggerEvent({"status": "success", "active": active})
                return
            self.log.info("Connectif %s queue is full (%d of %d); waiting for a slot", self.kind, active, self.limit)
            await self._sleep(interval)
            interval = min(interval * QUEUED_BACKOFF_FACTOR, self.max_poll_interval)
