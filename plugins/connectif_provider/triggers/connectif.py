"""Deferrable waits on Connectif imports, exports and queue slots, run by the triggerer.

Triggers only ever GET. Each request goes through :class:`ConnectifHook`'s async client, so it takes its
token from the deployment's shared bucket and is retried on 5xx, 429 and dropped connections; a poll that
still fails is logged and the trigger keeps waiting (until its deadline) rather than failing the task.
Events are dicts with a ``status``: ``success``, ``error`` or ``timeout``.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

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
    RemoteStatus,
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


@dataclass(frozen=True)
class _Round:
    """What one poll found: the final event, else whether work is being processed (not just queued)."""

    event: dict[str, Any] | None = None
    running: bool = False


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

    async def _poll_until_done(
        self,
        poll: Callable[[float], Awaitable[_Round]],
        *,
        timeout_event: Callable[[], dict[str, Any]],
        error_event: Callable[[str], dict[str, Any]],
    ) -> AsyncIterator[TriggerEvent]:
        """
        The loop every trigger runs: poll until ``poll`` returns an event, or the deadline passes.

        A transient failure (5xx, 429, dropped connection, after the hook's own retries) is logged and the
        poll repeated one interval later; any other API error ends the wait with ``error_event``. While
        something is being processed the interval stays at ``poll_interval``; while everything waits in
        a queue it grows by ``QUEUED_BACKOFF_FACTOR`` up to ``max_poll_interval``. ``poll`` receives the
        interval of the coming sleep (for its log lines).
        """
        interval = self.poll_interval
        rounds = 0  # reported in the event: the run's "API requests spent" counts them
        await self._first_wait()
        while True:
            left = self._time_left()
            if left is not None and left <= 0:
                yield TriggerEvent(timeout_event())
                return
            try:
                rounds += 1
                outcome = await poll(interval)
            except _TRANSIENT as exc:
                self.log.warning("Polling Connectif failed, will try again: %s", exc)
                await self._sleep(interval)
                continue
            except ConnectifError as exc:
                yield TriggerEvent(error_event(str(exc)))
                return
            if outcome.event is not None:
                yield TriggerEvent({**outcome.event, "poll_rounds": rounds})
                return
            if outcome.running:
                interval = self.poll_interval
                await self._sleep(interval)
            else:
                await self._sleep(interval)
                interval = min(interval * QUEUED_BACKOFF_FACTOR, self.max_poll_interval)


class _ResourcesTrigger(_PollingTrigger):
    """
    Wait until every import (or export) of a list is ``finished``; the subclasses name the resource.

    Fires ``{"status": "success", <key>: [...]}`` (in the order of the ids) when all are finished;
    ``{"status": "error", "message", <key>}`` as soon as one fails (or cannot be read: unknown id, lost
    permission); ``{"status": "timeout", "message", <key>}`` at ``deadline``.
    """

    #: The event's key for the resources ("imports" / "exports"), also the plural of log messages.
    event_key: ClassVar[str]
    status_enum: ClassVar[type[RemoteStatus]]

    @abstractmethod
    def _ids(self) -> list[str]:
        """The ids waited for, in the order of the success event."""

    @abstractmethod
    async def _fetch(self, hook: ConnectifHook, resource_id: str) -> dict[str, Any]:
        """One GET of the resource."""

    @abstractmethod
    def _failure_message(self, failed: list[str], statuses: dict[str, RemoteStatus]) -> str:
        """The error event's message naming the failed ids."""

    @abstractmethod
    def _log_running(self, resource_id: str, resource: dict[str, Any]) -> None:
        """Log the progress of one resource being processed."""

    def _log_finished(self, resources: list[dict[str, Any]]) -> None:
        """Nothing by default; imports log their final counts."""

    def _log_queued(self, pending: list[str], interval: float) -> None:
        """Nothing by default; imports say they are queued behind others."""

    def _pending(self, latest: dict[str, dict[str, Any]]) -> list[str]:
        return [
            i
            for i in self._ids()
            if i not in latest or not self.status_enum.parse(latest[i].get("status")).is_finished
        ]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ConnectifHook(self.connectif_conn_id)
        latest: dict[str, dict[str, Any]] = {}
        key = self.event_key

        async def poll(interval: float) -> _Round:
            for resource_id in self._pending(latest):
                latest[resource_id] = await self._fetch(hook, resource_id)
            statuses = {i: self.status_enum.parse(r.get("status")) for i, r in latest.items()}
            failed = [i for i, s in statuses.items() if s.is_failed]
            if failed:
                message = self._failure_message(failed, statuses)
                return _Round(event={"status": "error", "message": message, key: list(latest.values())})
            if all(s.is_finished for s in statuses.values()):
                self._log_finished(list(latest.values()))
                return _Round(event={"status": "success", key: [latest[i] for i in self._ids()]})
            if any(s.is_running for s in statuses.values()):
                for resource_id, status in statuses.items():
                    if status.is_running:
                        self._log_running(resource_id, latest[resource_id])
                return _Round(running=True)
            self._log_queued(self._pending(latest), interval)
            return _Round()

        def timeout_event() -> dict[str, Any]:
            message = f"{key.capitalize()} {self._pending(latest)} were not finished at the deadline"
            return {"status": "timeout", "message": message, key: list(latest.values())}

        def error_event(message: str) -> dict[str, Any]:
            return {"status": "error", "message": message, key: list(latest.values())}

        async for event in self._poll_until_done(poll, timeout_event=timeout_event, error_event=error_event):
            yield event


class ConnectifImportTrigger(_ResourcesTrigger):
    """
    Wait until every import in ``import_ids`` is terminal.

    Fires ``{"status": "success", "imports": [...]}`` when all are ``finished``;
    ``{"status": "error", "message", "imports"}`` as soon as one ends ``error``/``cancelled`` (or cannot be
    read: unknown id, lost permission); ``{"status": "timeout", "message", "imports"}`` at ``deadline``.
    """

    event_key = "imports"
    status_enum = ImportStatus

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

    def _ids(self) -> list[str]:
        return self.import_ids

    async def _fetch(self, hook: ConnectifHook, resource_id: str) -> dict[str, Any]:
        return await hook.aget_import(resource_id)

    def _failure_message(self, failed: list[str], statuses: dict[str, RemoteStatus]) -> str:
        return "Import " + ", ".join(f"{i} is {statuses[i].value}" for i in failed)

    def _log_running(self, resource_id: str, resource: dict[str, Any]) -> None:
        self.log.info("Import %s %s", resource_id, progress_message(resource))

    def _log_finished(self, resources: list[dict[str, Any]]) -> None:
        for resource in resources:
            self.log.info("Import %s %s", resource.get("id"), progress_message(resource))

    def _log_queued(self, pending: list[str], interval: float) -> None:
        self.log.info("Imports %s queued behind others; next poll in %.0f s", pending, interval)


class ConnectifExportTrigger(_ResourcesTrigger):
    """Wait until every export in ``export_ids`` is ``finished`` (events as for imports)."""

    event_key = "exports"
    status_enum = ExportStatus

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

    def _ids(self) -> list[str]:
        return self.export_ids

    async def _fetch(self, hook: ConnectifHook, resource_id: str) -> dict[str, Any]:
        return await hook.aget_export(resource_id)

    def _failure_message(self, failed: list[str], statuses: dict[str, RemoteStatus]) -> str:
        return f"Exports {failed} ended in error"

    def _log_running(self, resource_id: str, resource: dict[str, Any]) -> None:
        self.log.info("Export %s progress %s of %s", resource_id, resource.get("progress"), resource.get("total"))


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

        async def poll(interval: float) -> _Round:
            if self.kind == "imports":
                active = await hook.acount_active_imports()
            else:
                active = await hook.acount_active_exports()
            if active < self.limit:
                return _Round(event={"status": "success", "active": active})
            self.log.info("Connectif %s queue is full (%d of %d); waiting for a slot", self.kind, active, self.limit)
            return _Round()

        async for event in self._poll_until_done(
            poll,
            timeout_event=lambda: {
                "status": "timeout",
                "message": f"No free Connectif {self.kind} slot before the deadline",
            },
            error_event=lambda message: {"status": "error", "message": message},
        ):
            yield event
