"""Wait for imports that already exist (e.g. started from the Connectif app)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from connectif_provider.exceptions import ConnectifImportFailedError
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.models import ImportStatus, parse_import_status
from connectif_provider.triggers.connectif import ConnectifImportTrigger, progress_message


class ConnectifImportSensor(BaseSensorOperator):
    """
    Succeed when every import in ``import_ids`` has ``finished``; fail if one ends ``error``/``cancelled``.

    Deferrable by default (the wait runs in the triggerer); ``poke_interval`` is the base poll interval and
    ``timeout`` the deadline. Returns (XCom) the list of final Import resources.

    :param import_ids: one id or a list (templated).
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
        kwargs.setdefault("poke_interval", 30.0)
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
            trigger=ConnectifImportTrigger(
                import_ids=self._ids(),
                connectif_conn_id=self.connectif_conn_id,
                poll_interval=float(self.poke_interval),
                max_poll_interval=self.max_poll_interval,
                deadline=time.time() + float(self.timeout),
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> PokeReturnValue:
        hook = ConnectifHook(self.connectif_conn_id)
        resources = [hook.get_import(i) for i in self._ids()]
        for resource in resources:
            status = parse_import_status(resource.get("status"))
            if status in (ImportStatus.ERROR, ImportStatus.CANCELLED):
                raise ConnectifImportFailedError(f"Import {resource.get('id')} ended {status.value}")
            if status is ImportStatus.IN_PROGRESS:
                self.log.info("Import %s %s", resource.get("id"), progress_message(resource))
        done = all(parse_import_status(r.get("status")) is ImportStatus.FINISHED for r in resources)
        return PokeReturnValue(is_done=done, xcom_value=resources if done else None)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        status = event.get("status")
        if status == "success":
            return list(event["imports"])
        if status == "timeout":
            raise AirflowSensorTimeout(f"Imports not finished in time: {event.get('message')}")
        raise ConnectifImportFailedError(f"Waiting for imports failed: {event.get('message')}")
