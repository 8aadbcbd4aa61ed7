"""Deferrable waits on Connectif imports, exports and queue slots, run by the triggerer.

Triggers only ever GET. Each request goes through :class:`ConnectifHook`'s async client, so it takes its
token from the deployment's shared bucket and is retried on 5xx, 429 and dropped connections; a poll that
still fails is logged and the trigger keeps waiting (until its deadline) rather than failing the task.
Events are dicts with a ``status``: ``success``, ``error`` or ``timeout``.

One flat loop (:func:`~connectif_provider.utils.polling.apoll_until_done`, the poll policy the hook's
non-deferrable wait follows too) serves every trigger here. :class:`ConnectifJobTrigger` waits for imports
or exports. ``ConnectifImportTrigger`` and ``ConnectifExportTrigger`` are the class paths earlier versions
deferred on: the triggerer keeps them in its table, so they stay importable, as the job trigger under their
old arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.models import JobKind
from connectif_provider.utils.polling import (
    DEFAULT_POLL_INTERVAL,
    FIRST_POLL_DELAY,
    QUEUED_BACKOFF_FACTOR,
    JobsWatch,
    PollPolicy,
    QueueWatch,
    Round,
    apoll_until_done,
    progress_message,
)

__all__ = [
    "FIRST_POLL_DELAY",
    "QUEUED_BACKOFF_FACTOR",
    "ConnectifExportTrigger",
    "ConnectifImportTrigger",
    "ConnectifJobTrigger",
    "ConnectifQueueSlotTrigger",
    "progress_message",
]


class _PolledTrigger(BaseTrigger):
    """The connection and the poll policy every trigger here serialises."""

    def __init__(
        self,
        *,
        connectif_conn_id: str = ConnectifHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float | None = None,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.connectif_conn_id = connectif_conn_id
        self.policy = PollPolicy(poll_interval, max_poll_interval, deadline)
        self.poll_interval = self.policy.poll_interval
        self.max_poll_interval = self.policy.cap
        self.deadline = deadline

    def _common_kwargs(self) -> dict[str, Any]:
        return {
            "connectif_conn_id": self.connectif_conn_id,
            "poll_interval": self.poll_interval,
            "max_poll_interval": self.max_poll_interval,
            "deadline": self.deadline,
        }


class ConnectifJobTrigger(_PolledTrigger):
    """
    Wait until every import (``kind="imports"``) or export (``"exports"``) in ``job_ids`` is terminal.

    Fires ``{"status": "success", <kind>: [...]}`` (in the order of the ids) when all are ``finished``;
    ``{"status": "error", "message", <kind>}`` as soon as one fails (or cannot be read: unknown id, lost
    permission); ``{"status": "timeout", "message", <kind>}`` at ``deadline``. Every event but an API
    error carries ``poll_rounds`` (the requests the wait spent).
    """

    def __init__(self, *, kind: JobKind | str, job_ids: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = JobKind(kind)
        if not job_ids:
            raise ValueError(f"{type(self).__name__} needs at least one {self.kind.noun.lower()} id")
        self.job_ids = [str(i) for i in job_ids]

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "connectif_provider.triggers.connectif.ConnectifJobTrigger",
            {"kind": self.kind.value, "job_ids": self.job_ids, **self._common_kwargs()},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ConnectifHook(self.connectif_conn_id)
        watch = JobsWatch(self.kind, self.job_ids, self.log)

        async def poll(interval: float) -> Round:
            for job_id in watch.pending():
                watch.latest[job_id] = await hook.aget_job(self.kind, job_id)
            return watch.assess(interval)

        event = await apoll_until_done(
            self.policy, poll, timeout_event=watch.timeout_event, error_event=watch.error_event
        )
        yield TriggerEvent(event)


class ConnectifImportTrigger(ConnectifJobTrigger):
    """The job trigger for imports under the class path and arguments earlier versions persisted."""

    def __init__(self, *, import_ids: list[str], **kwargs: Any) -> None:
        super().__init__(kind=JobKind.IMPORTS, job_ids=import_ids, **kwargs)

    @property
    def import_ids(self) -> list[str]:
        return self.job_ids

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "connectif_provider.triggers.connectif.ConnectifImportTrigger",
            {"import_ids": self.job_ids, **self._common_kwargs()},
        )


class ConnectifExportTrigger(ConnectifJobTrigger):
    """The job trigger for exports under the class path and arguments earlier versions persisted."""

    def __init__(self, *, export_ids: list[str], **kwargs: Any) -> None:
        super().__init__(kind=JobKind.EXPORTS, job_ids=export_ids, **kwargs)

    @property
    def export_ids(self) -> list[str]:
        return self.job_ids

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "connectif_provider.triggers.connectif.ConnectifExportTrigger",
            {"export_ids": self.job_ids, **self._common_kwargs()},
        )


class ConnectifQueueSlotTrigger(_PolledTrigger):
    """
    Wait until the account has a free import (``kind="imports"``, 10) or export (``"exports"``, 5) slot.

    Used after E0401/E0301 so that a full queue costs a deferred wait, not a failed task or a held worker.
    Fires ``{"status": "success", "active": n}`` or ``{"status": "timeout", ...}``.
    """

    def __init__(self, *, kind: JobKind | str, limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            self.kind = JobKind(kind)
        except ValueError:
            raise ValueError(f"kind must be 'imports' or 'exports', got {kind!r}") from None
        self.limit = int(limit or self.kind.max_queued)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "connectif_provider.triggers.connectif.ConnectifQueueSlotTrigger",
            {"kind": self.kind.value, "limit": self.limit, **self._common_kwargs()},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ConnectifHook(self.connectif_conn_id)
        watch = QueueWatch(self.kind, self.limit, self.log)

        async def poll(interval: float) -> Round:
            return watch.assess(await hook.acount_active(self.kind))

        event = await apoll_until_done(
            self.policy, poll, timeout_event=watch.timeout_event, error_event=watch.error_event
        )
        yield TriggerEvent(event)
