"""Wait for imports that already exist (e.g. started from the Connectif app).

The sensor reuses the job trigger (deferrable, the default) and the hook's reads (``poke``), so its waits
follow the same poll policy as the operators'.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from connectif_provider.exceptions import ConnectifImportFailedError
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.models import EventStatus, JobKind
from connectif_provider.triggers.connectif import ConnectifJobTrigger
from connectif_provider.utils.polling import DEFAULT_POLL_INTERVAL, JobsWatch


class ConnectifImportSensor(BaseSensorOperator):
    """
    Succeed when every import in ``import_ids`` has ``finished``; fail if one ends ``error``/``cancelled``.

    Deferrable by default (the wait runs in the triggerer); ``poke_interval`` is the base poll interval and
    ``timeout`` the deadline. Returns (XCom) the list of final Import resources.

    :param import_ids: one id or a list (templated).
    :param max_poll_interval: cap of the interval grown while imports are queued (default: the poll policy's).
    """

    template_fields: Sequence[str] = ("import_ids",)
    ui_color = "#d9ecff"

    def __init__(
        self,
        *,
        import_ids: str | list[str],
        connectif_conn_id: str = ConnectifHook.default_conn_name,
        deferrable: bool = True,
        max_poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", DEFAULT_POLL_INTERVAL)
        super().__init__(**kwargs)
        self.import_ids = import_ids
        self.connectif_conn_id = connectif_conn_id
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval

    def _ids(self) -> list[str]:
        ids = [self.import_ids] if isinstance(self.import_ids, str) else list(self.import_ids)
        if not ids:
            raise ValueError("ConnectifImportSensor needs at least one import id")
        return [str(i) for i in ids]

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self.defer(
            trigger=ConnectifJobTrigger(
                kind=JobKind.IMPORTS,
                job_ids=self._ids(),
                connectif_conn_id=self.connectif_conn_id,
                poll_interval=float(self.poke_interval),
                max_poll_interval=self.max_poll_interval,
                deadline=time.time() + float(self.timeout),
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue:
        """One read of every import, judged as the trigger judges a poll."""
        hook = ConnectifHook(self.connectif_conn_id)
        watch = JobsWatch(JobKind.IMPORTS, self._ids(), self.log)
        for import_id in watch.job_ids:
            watch.latest[import_id] = hook.get_import(import_id)
        outcome = watch.assess(float(self.poke_interval))
        event = outcome.event or {}
        if event.get("status") == EventStatus.ERROR:
            raise ConnectifImportFailedError(str(event.get("message")))
        done = event.get("status") == EventStatus.SUCCESS
        return PokeReturnValue(is_done=done, xcom_value=event["imports"] if done else None)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        status = event.get("status")
        if status == EventStatus.SUCCESS:
            return list(event["imports"])
        if status == EventStatus.TIMEOUT:
            raise AirflowSensorTimeout(f"Imports not finished in time: {event.get('message')}")
        raise ConnectifImportFailedError(f"Waiting for imports failed: {event.get('message')}")
