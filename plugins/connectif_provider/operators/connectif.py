"""Operators that upload imports to and fetch exports from Connectif, waiting deferred (no worker held).

Each operator only creates its work (or re-attaches to an earlier try's), chooses between deferring on the
job trigger and the hook's non-deferrable wait, and completes. The waits follow the one poll policy
(:mod:`connectif_provider.utils.polling`); reconciling an upload of unknown outcome is
:mod:`connectif_provider.utils.reconcile`; reading the error report and the summary is
:mod:`connectif_provider.utils.reports`.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context

from connectif_provider.exceptions import (
    ConnectifError,
    ConnectifExportFailedError,
    ConnectifExportQueueFullError,
    ConnectifImportFailedError,
    ConnectifImportQueueFullError,
    ConnectifNotFoundError,
    ConnectifRowErrorsExceededError,
    ConnectifTimeoutError,
)
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.links import ConnectifRunTabLink
from connectif_provider.models import (
    EventStatus,
    ExportStatus,
    ExportType,
    ImportStatus,
    ImportType,
    JobKind,
    parse_export_status,
    parse_import_status,
)
from connectif_provider.triggers.connectif import ConnectifJobTrigger, ConnectifQueueSlotTrigger
from connectif_provider.utils.dates import split_date_range
from connectif_provider.utils.polling import DEFAULT_POLL_INTERVAL, PollPolicy
from connectif_provider.utils.reconcile import ImportUpload
from connectif_provider.utils.reports import (
    REPORT_ATTEMPTS,
    REPORT_RETRY_DELAY,
    import_summary,
    read_error_report,
    report_accounts_for_all,
    too_many_errors,
)

__all__ = [
    "REPORT_ATTEMPTS",
    "REPORT_RETRY_DELAY",
    "ConnectifExportOperator",
    "ConnectifImportOperator",
    "import_summary",
    "report_accounts_for_all",
    "split_date_range",
]


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _state_store(context: Context) -> Any:
    """``context["task_state_store"]`` (Airflow >= 3.3), or None where the runtime offers none."""
    try:
        return context.get("task_state_store")
    except Exception:
        return None


class _ConnectifJobOperator(BaseOperator):
    """
    What the import and export operators share: the wait for a free queue slot, the deadline, the events.

    Connectif queues imports (10) and exports (5) per account. Creating one while the queue is full
    (E0401/E0301) is waited out: deferred on :class:`ConnectifQueueSlotTrigger` (no worker held), or polled
    on the worker when not deferrable. The whole task, queue waits included, has one deadline: it is fixed
    in :meth:`execute` and handed through every deferral.
    """

    #: The account queue the work waits in.
    kind: ClassVar[JobKind]
    #: Raised when the work ends ``error``/``cancelled``.
    failed_error: ClassVar[type[ConnectifError]]
    #: Key of this task's entry in ``task_state_store``.
    state_key: ClassVar[str]

    def __init__(
        self,
        *,
        connectif_conn_id: str,
        poll_interval: float,
        max_poll_interval: float | None,
        timeout: float,
        deferrable: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.connectif_conn_id = connectif_conn_id
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.timeout = timeout
        self.deferrable = deferrable

    @property
    def hook(self) -> ConnectifHook:
        return ConnectifHook(self.connectif_conn_id)

    @property
    @abstractmethod
    def _subject(self) -> str:
        """The work, for messages (``import of <file>``, ``contacts export``)."""

    @abstractmethod
    def _run(self, context: Context, deadline: float) -> Any:
        """Create the work (or re-attach to an earlier try's) and wait for it until ``deadline``."""

    @abstractmethod
    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resumed when the job trigger fired (or the hook's wait ended): complete, or fail clearly."""

    def execute(self, context: Context) -> Any:
        return self._run(context, time.time() + self.timeout)

    def execute_after_slot(self, context: Context, event: dict[str, Any], deadline: float) -> Any:
        """Resumed after a full queue had a free slot: create the work again."""
        if event.get("status") != EventStatus.SUCCESS:
            raise ConnectifTimeoutError(f"Gave up creating the {self._subject}: {event.get('message')}")
        return self._run(context, deadline)

    def _raise_unless_success(self, event: dict[str, Any]) -> None:
        """Fail clearly on a trigger's (or the hook wait's) ``timeout`` or ``error`` event."""
        status = event.get("status")
        if status == EventStatus.TIMEOUT:
            raise ConnectifTimeoutError(
                f"Connectif {self._subject} did not finish within {self.timeout:.0f} s: {event.get('message')}"
            )
        if status != EventStatus.SUCCESS:
            raise self.failed_error(f"Connectif {self._subject} failed: {event.get('message')}")

    def _policy(self, deadline: float) -> PollPolicy:
        return PollPolicy(self.poll_interval, self.max_poll_interval, deadline)

    def _trigger_kwargs(self, deadline: float) -> dict[str, Any]:
        """What every trigger of this task gets: the connection, the poll intervals and the task's deadline."""
        return {
            "connectif_conn_id": self.connectif_conn_id,
            "poll_interval": self.poll_interval,
            "max_poll_interval": self.max_poll_interval,
            "deadline": deadline,
        }

    def _wait(self, context: Context, job_ids: list[str], deadline: float) -> Any:
        """Defer on the job trigger (resuming in ``execute_complete``), or wait here through the hook."""
        if self.deferrable:
            trigger = ConnectifJobTrigger(kind=self.kind, job_ids=job_ids, **self._trigger_kwargs(deadline))
            self.defer(trigger=trigger, method_name="execute_complete")
        event = self.hook.wait_for_jobs(self.kind, job_ids, self._policy(deadline))
        return self.execute_complete(context, event)

    def _await_queue_slot(self, deadline: float) -> None:
        """Defer until the queue has a free slot (or, not deferrable, wait for one); then the caller retries."""
        self.log.info("Connectif's %s queue is full (%s); waiting for a free slot", self.kind.noun.lower(),
                      self.kind.queue_full_code)  # fmt: skip
        if self.deferrable:
            self.defer(
                trigger=ConnectifQueueSlotTrigger(kind=self.kind, **self._trigger_kwargs(deadline)),
                method_name="execute_after_slot",
                kwargs={"deadline": deadline},
            )
        event = self.hook.wait_for_queue_slot(self.kind, self._policy(deadline))
        if event.get("status") != EventStatus.SUCCESS:
            raise ConnectifTimeoutError(
                f"No free Connectif {self.kind.noun.lower()} slot for the {self._subject} before the deadline"
            )


class ConnectifImportOperator(_ConnectifJobOperator):
    """
    Upload one CSV file as a Connectif import and wait (deferred) until Connectif has processed it.

    No duplicate import, whichever process dies and wherever: the intent (file, size, row count, upload
    start) is stored in ``task_state_store`` *before* the upload, and the import id as soon as it is known.
    A retry re-attaches to that import; a retry whose earlier try died waiting for the upload's answer
    finds the import it created in the account's import list (same type, options and row count, created
    since the upload started) before uploading again. With ``upload_ledger``, the same holds across runs:
    a later run's file of identical content re-attaches to the unconfirmed import an earlier run made.
    A full import queue (E0401) is waited out in the
    triggerer. On completion the error report is downloaded and the task returns (and pushes to XCom)
    ``{"import_id", "status", "total", "success", "errors", "rejected_rows": [{"line", "field", "error"}],
    "file_path", "duration_s", "api_requests"}``, ``line`` being the 1-based data row of the file.

    :param file_path: the CSV to upload (templated; map it over the chunk files of a sync).
    :param import_type: ``contacts``, ``products`` or ``coupons``.
    :param delimiter: ``,`` or ``;``.
    :param override_existing: overwrite existing elements.
    :param update_only_empty_fields: only fill empty fields (needs ``override_existing``).
    :param coupon_set_id: the coupon set receiving the codes (coupons imports).
    :param poll_interval: seconds between polls while the import runs (it grows while it is queued).
    :param max_poll_interval: cap of the grown interval (default 10x ``poll_interval``, at most 600 s).
    :param timeout: seconds (or timedelta) to wait for the import, queue waits included.
    :param deferrable: wait in the triggerer (default) instead of sleeping on a worker.
    :param max_row_errors: fail the task when more rows than this were rejected (None: never).
    :param max_row_error_ratio: fail the task when rejected/total exceeds this ratio (None: never).
    :param upload_ledger: a callable returning a store of uploads that outlives runs, with
        ``record_upload(path, *, started_at, rows, import_id=None)``, ``earlier_upload(path)`` and
        ``claimed_imports()`` (e.g. ``connectif_sync.store.StateStore``); closed after use when it has
        ``close()``. None: re-attachment within the task's own tries only.
    """

    template_fields: Sequence[str] = ("file_path", "import_type", "coupon_set_id", "delimiter")
    operator_extra_links = (ConnectifRunTabLink(),)
    ui_color = "#d9ecff"
    kind = JobKind.IMPORTS
    failed_error = ConnectifImportFailedError
    state_key = "connectif_import"

    def __init__(
        self,
        *,
        file_path: str,
        import_type: str | ImportType,
        delimiter: str = ",",
        override_existing: bool = False,
        update_only_empty_fields: bool = False,
        coupon_set_id: str | None = None,
        connectif_conn_id: str = ConnectifHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float | None = None,
        timeout: float | timedelta = 6 * 3600,
        deferrable: bool = True,
        max_row_errors: int | None = None,
        max_row_error_ratio: float | None = None,
        upload_ledger: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            connectif_conn_id=connectif_conn_id,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=_seconds(timeout) or 6 * 3600.0,
            deferrable=deferrable,
            **kwargs,
        )
        self.file_path = file_path
        self.import_type = str(import_type.value if isinstance(import_type, ImportType) else import_type)
        self.delimiter = delimiter
        self.override_existing = override_existing
        self.update_only_empty_fields = update_only_empty_fields
        self.coupon_set_id = coupon_set_id
        self.max_row_errors = max_row_errors
        self.max_row_error_ratio = max_row_error_ratio
        self.upload_ledger = upload_ledger

    @property
    def _subject(self) -> str:
        return f"import of {self.file_path}"

    def _options(self) -> dict[str, Any]:
        """The import options as the Import resource shows them (to recognise this task's import)."""
        options: dict[str, Any] = {
            "delimiter": self.delimiter,
            "overrideExisting": self.override_existing,
            "updateOnlyEmptyFields": self.update_only_empty_fields,
        }
        if self.coupon_set_id:
            options["couponSetId"] = self.coupon_set_id
        return options

    # -- create / re-attach ---------------------------------------------------------------------------------
    def _run(self, context: Context, deadline: float) -> Any:
        ledger = self.upload_ledger() if self.upload_ledger is not None else None
        hook = self.hook
        upload = ImportUpload(
            hook=hook, file_path=str(self.file_path), import_type=ImportType(self.import_type),
            options=self._options(), delimiter=self.delimiter, store=_state_store(context), ledger=ledger,
            state_key=self.state_key, logger=self.log,
        )  # fmt: skip
        try:
            return self._attach_or_upload(context, deadline, hook, upload)
        finally:
            close = getattr(ledger, "close", None)
            if callable(close):
                close()

    def _attach_or_upload(self, context: Context, deadline: float, hook: ConnectifHook, upload: ImportUpload) -> Any:
        resource = upload.earlier_import()
        if resource is not None:
            status = parse_import_status(resource.get("status"))
            if status is ImportStatus.FINISHED:
                self.log.info("Import %s of %s had already finished", resource["id"], self.file_path)
                return self._complete(context, resource)
            self.log.info("Re-attaching to import %s (%s) of %s", resource["id"], status.value, self.file_path)
            return self._wait(context, [str(resource["id"])], deadline)
        while True:
            intent = upload.record_intent()
            try:
                created = hook.create_import(
                    upload.file_path,
                    self.import_type,
                    delimiter=self.delimiter,
                    override_existing=self.override_existing,
                    update_only_empty_fields=self.update_only_empty_fields,
                    coupon_set_id=self.coupon_set_id,
                )
                break
            except ConnectifImportQueueFullError:
                upload.forget_intent()
                self._await_queue_slot(deadline)
            except ConnectifError as exc:
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                    upload.forget_intent()
                raise
        import_id = str(created["id"])
        upload.record_import(intent, import_id)
        self.log.info("Uploaded %s as import %s (%s rows)", upload.file_path, import_id, created.get("total"))
        return self._wait(context, [import_id], deadline)

    # -- complete ---------------------------------------------------------------------------------------------
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed when the trigger fired: summarise, or fail clearly."""
        self._raise_unless_success(event)
        # upload + the trigger's status polls (+ the error report, counted in _complete)
        rounds = event.get("poll_rounds")
        return self._complete(context, event["imports"][0], requests=None if rounds is None else 1 + int(rounds))

    def _complete(self, context: Context, resource: dict[str, Any], requests: int | None = None) -> dict[str, Any]:
        errors = int(resource.get("errors") or 0)
        rejected, complete = read_error_report(self.hook, resource, poll_interval=self.poll_interval, logger=self.log)
        if requests is not None and errors and resource.get("errorReportFileUrl"):
            requests += 1  # the error report's download
        summary = import_summary(
            resource, rejected, str(self.file_path), report_complete=complete, api_requests=requests
        )
        self.log.info(
            "Import %s finished: %d of %d rows imported, %d rejected",
            summary["import_id"], summary["success"], summary["total"], summary["errors"],
        )  # fmt: skip
        for row in rejected[:20]:
            self.log.info("  rejected line %s field %s: %s", row["line"], row["field"], row["error"])
        if too_many_errors(summary, self.max_row_errors, self.max_row_error_ratio):
            ti = context.get("ti")
            if ti is not None:
                ti.xcom_push(key="import_summary", value=summary)
            raise ConnectifRowErrorsExceededError(
                f"Import {summary['import_id']} of {self.file_path} rejected {errors} of {summary['total']} rows, "
                f"over the task's threshold (max_row_errors={self.max_row_errors}, "
                f"max_row_error_ratio={self.max_row_error_ratio}); the summary is in XCom 'import_summary'"
            )
        return summary


class ConnectifExportOperator(_ConnectifJobOperator):
    """
    Export contacts, activities or a data-explorer report from Connectif into CSV files under ``output_dir``.

    An activities (or data-explorer) range longer than 31 days becomes several exports. A full export
    queue (E0301) is waited out deferred. Created export ids are kept in ``task_state_store`` so a retry
    does not export again. Returns ``{"export_ids": [...], "files": [...]}`` (absolute CSV paths, in the
    order of the ranges; each export unpacks into ``output_dir/<export_id>/``).
    """

    template_fields: Sequence[str] = (
        "output_dir",
        "from_date",
        "to_date",
        "segment_id",
        "report_id",
        "activity_types",
    )
    ui_color = "#e3f5e1"
    kind = JobKind.EXPORTS
    failed_error = ConnectifExportFailedError
    state_key = "connectif_export"

    def __init__(
        self,
        *,
        export_type: str | ExportType,
        output_dir: str,
        delimiter: str = ",",
        date_format: str = "ISO",
        segment_id: str | None = None,
        from_date: str | None = None,
        to_date: str | None = None,
        activity_types: list[str] | None = None,
        report_id: str | None = None,
        connectif_conn_id: str = ConnectifHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float | None = None,
        timeout: float | timedelta = 3 * 3600,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            connectif_conn_id=connectif_conn_id,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=_seconds(timeout) or 3 * 3600.0,
            deferrable=deferrable,
            **kwargs,
        )
        self.export_type = str(export_type.value if isinstance(export_type, ExportType) else export_type)
        ExportType(self.export_type)
        self.output_dir = output_dir
        self.delimiter = delimiter
        self.date_format = date_format
        self.segment_id = segment_id
        self.from_date = from_date
        self.to_date = to_date
        self.activity_types = activity_types
        self.report_id = report_id

    @property
    def _subject(self) -> str:
        return f"{self.export_type} export"

    def plan(self) -> list[dict[str, Any]]:
        """One dict of ``create_export`` arguments per export to create."""
        kind = ExportType(self.export_type)
        base: dict[str, Any] = {"export_type": kind.value, "delimiter": self.delimiter}
        if kind is ExportType.DATA_EXPLORER:
            if not (self.report_id and self.from_date and self.to_date):
                raise ValueError("a data-explorer export needs report_id, from_date and to_date")
            return [
                {**base, "report_id": self.report_id, "from_date": a, "to_date": b}
                for a, b in split_date_range(self.from_date[:10], self.to_date[:10])
            ]
        base.update({"date_format": self.date_format, "segment_id": self.segment_id})
        if kind is ExportType.ACTIVITIES:
            if not (self.from_date and self.to_date):
                raise ValueError("an activities export needs from_date and to_date")
            return [
                {**base, "from_date": a, "to_date": b, "activity_types": self.activity_types}
                for a, b in split_date_range(self.from_date, self.to_date)
            ]
        return [{**base, "from_date": self.from_date, "to_date": self.to_date}]

    def _still_good(self, hook: ConnectifHook, export_id: str | None) -> bool:
        """Whether an earlier try's export can be kept (it exists and did not end in error)."""
        if export_id is None:
            return False
        try:
            if parse_export_status(hook.get_export(export_id).get("status")) is not ExportStatus.ERROR:
                return True
            self.log.warning("Export %s of an earlier try ended in error; exporting again", export_id)
        except ConnectifNotFoundError:
            self.log.warning("Export %s of an earlier try no longer exists; exporting again", export_id)
        return False

    def _run(self, context: Context, deadline: float) -> Any:
        hook = self.hook
        store = _state_store(context)
        plan = self.plan()
        saved = store.get(self.state_key) if store is not None else None
        ids: list[str | None] = [None] * len(plan)
        if isinstance(saved, dict) and saved.get("plan") == plan:
            ids = list(saved.get("export_ids") or ids)
        for index, request in enumerate(plan):
            if self._still_good(hook, ids[index]):
                continue
            try:
                created = hook.create_export(**request)
            except ConnectifExportQueueFullError:
                self._await_queue_slot(deadline)
                return self._run(context, deadline)
            ids[index] = str(created["id"])
            self.log.info("Created %s export %s (%s)", self.export_type, ids[index], request)
            if store is not None:
                store.set(self.state_key, {"plan": plan, "export_ids": ids})
        return self._wait(context, [str(i) for i in ids], deadline)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed when the trigger fired: download and unpack every export, or fail clearly."""
        self._raise_unless_success(event)
        hook = self.hook
        export_ids = [str(e["id"]) for e in event["exports"]]
        files: list[str] = []
        for export_id in export_ids:
            paths = hook.download_export(export_id, Path(self.output_dir) / export_id)
            files.extend(str(p.resolve()) for p in paths)
        self.log.info("Downloaded %d CSV files from exports %s", len(files), export_ids)
        return {"export_ids": export_ids, "files": files}
