"""Operators that upload imports to and fetch exports from Connectif, waiting deferred (no worker held)."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context
from airflow.triggers.base import BaseTrigger

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
from connectif_provider.hooks.connectif import ConnectifHook, count_csv_rows
from connectif_provider.links import ConnectifRunTabLink
from connectif_provider.models import (
    MAX_EXPORT_RANGE_DAYS,
    MAX_QUEUED_EXPORTS,
    MAX_QUEUED_IMPORTS,
    ExportStatus,
    ExportType,
    ImportStatus,
    ImportType,
    parse_export_status,
    parse_import_status,
)
from connectif_provider.triggers.connectif import (
    QUEUED_BACKOFF_FACTOR,
    ConnectifExportTrigger,
    ConnectifImportTrigger,
    ConnectifQueueSlotTrigger,
    progress_message,
)


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


def _fingerprint(path: str) -> dict[str, int] | None:
    """Size and modification time of the file, or None when it is not on this machine."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


#: Reads of an import's error report before a short or missing one is given up on.
REPORT_ATTEMPTS = 3
#: Seconds before the second read (the third waits twice as long); capped by the task's poll_interval.
REPORT_RETRY_DELAY = 5.0


def report_lines(rejected_rows: list[dict[str, Any]]) -> set[int]:
    """The distinct data lines an error report names (a line may fail on several fields)."""
    out: set[int] = set()
    for row in rejected_rows:
        try:
            out.add(int(row.get("line")))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return out


def report_accounts_for_all(resource: dict[str, Any], listed: int) -> bool:
    """Whether an error report naming ``listed`` distinct lines accounts for every failed row: as many lines
    as ``errors``, or (should Connectif count errors per field) the lines plus ``success`` make ``total``."""
    errors, success, total = (int(resource.get(k) or 0) for k in ("errors", "success", "total"))
    return listed >= errors or (listed > 0 and success + listed == total)


def _import_duration(resource: dict[str, Any]) -> float | None:
    """Seconds Connectif took from starting (else creating) the import to finishing it, when it says."""
    end = resource.get("finishedAt") or resource.get("cancelledAt")
    start = resource.get("startedAt") or resource.get("createdAt")
    if not end or not start:
        return None
    try:
        parsed = [datetime.fromisoformat(str(v).replace("Z", "+00:00")) for v in (start, end)]
        return round((parsed[1] - parsed[0]).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


def import_summary(
    resource: dict[str, Any],
    rejected_rows: list[dict[str, Any]],
    file_path: str,
    *,
    report_complete: bool = True,
    api_requests: int | None = None,
) -> dict[str, Any]:
    """The operator's XCom: what the sync library needs to commit confirmed rows and keep failed ones, plus
    what the monitoring pages show (``duration_s``, ``api_requests`` this import spent when known).

    ``report_complete`` is False when the error report (missing, or short) does not name every failed row:
    then nothing of the file may be confirmed.
    """
    return {
        "import_id": str(resource.get("id")),
        "status": str(resource.get("status")),
        "total": int(resource.get("total") or 0),
        "success": int(resource.get("success") or 0),
        "errors": int(resource.get("errors") or 0),
        "rejected_rows": rejected_rows,
        "report_complete": report_complete,
        "file_path": file_path,
        "duration_s": _import_duration(resource),
        "api_requests": api_requests,
    }


@dataclass(frozen=True)
class _SyncPoll:
    """One read of the work by the non-deferrable wait: its final event, else the timeout event to use."""

    event: dict[str, Any] | None = None
    timeout_event: dict[str, Any] = field(default_factory=dict)
    running: bool = False


class _ConnectifQueuedWorkOperator(BaseOperator):
    """
    What the import and export operators share: the wait for a free queue slot, the deadline, the events.

    Connectif queues imports (10) and exports (5) per account. Creating one while the queue is full
    (E0401/E0301) is waited out: deferred on :class:`ConnectifQueueSlotTrigger` (no worker held), or polled
    on the worker when not deferrable. The whole task, queue waits included, has one deadline: it is fixed
    in :meth:`execute` and handed through every deferral.
    """

    #: ``imports`` or ``exports``: the account queue the work waits in.
    queue_kind: ClassVar[str]
    queue_limit: ClassVar[int]
    #: The error code Connectif answers when that queue is full.
    queue_full_code: ClassVar[str]
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

    # -- entry points -------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        return self._run(context, time.time() + self.timeout)

    def execute_after_slot(self, context: Context, event: dict[str, Any], deadline: float) -> Any:
        """Resumed after a full queue had a free slot: create the work again."""
        if event.get("status") != "success":
            raise ConnectifTimeoutError(f"Gave up creating the {self._subject}: {event.get('message')}")
        return self._run(context, deadline)

    def _raise_unless_success(self, event: dict[str, Any]) -> None:
        """Fail clearly on a trigger's (or the sync wait's) ``timeout`` or ``error`` event."""
        status = event.get("status")
        if status == "timeout":
            raise ConnectifTimeoutError(
                f"Connectif {self._subject} did not finish within {self.timeout:.0f} s: {event.get('message')}"
            )
        if status != "success":
            raise self.failed_error(f"Connectif {self._subject} failed: {event.get('message')}")

    def _trigger_kwargs(self, deadline: float) -> dict[str, Any]:
        """What every trigger of this task gets: the connection, the poll intervals and the task's deadline."""
        return {
            "connectif_conn_id": self.connectif_conn_id,
            "poll_interval": self.poll_interval,
            "max_poll_interval": self.max_poll_interval,
            "deadline": deadline,
        }

    def _defer_if_deferrable(self, trigger: BaseTrigger) -> None:
        """Wait for the work in the triggerer (resuming in ``execute_complete``); else return to wait here."""
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete")

    # -- task_state_store ------------------------------------------------------------------------------
    def _recall(self, store: Any) -> Any:
        """What an earlier try of this task stored under ``state_key`` (None without a store)."""
        return store.get(self.state_key) if store is not None else None

    def _remember(self, store: Any, value: dict[str, Any]) -> None:
        if store is not None:
            store.set(self.state_key, value)

    # -- full queue -------------------------------------------------------------------------------------
    def _await_queue_slot(self, hook: ConnectifHook, deadline: float) -> None:
        """Defer until the queue has a free slot (or, not deferrable, poll for one); then the caller retries."""
        self.log.info(
            "Connectif's %s queue is full (%s); waiting for a free slot", self.queue_kind[:-1], self.queue_full_code
        )
        if self.deferrable:
            self.defer(
                trigger=ConnectifQueueSlotTrigger(
                    kind=self.queue_kind, limit=self.queue_limit, **self._trigger_kwargs(deadline)
                ),
                method_name="execute_after_slot",
                kwargs={"deadline": deadline},
            )
        count = hook.count_active_imports if self.queue_kind == "imports" else hook.count_active_exports
        interval = self.poll_interval
        while count() >= self.queue_limit:
            if time.time() >= deadline:
                raise ConnectifTimeoutError(
                    f"No free Connectif {self.queue_kind[:-1]} slot for the {self._subject} before the deadline"
                )
            time.sleep(min(interval, max(deadline - time.time(), 0)))
            interval = self._next_queued_interval(interval)

    def _next_queued_interval(self, interval: float) -> float:
        return min(interval * QUEUED_BACKOFF_FACTOR, self.max_poll_interval or self.poll_interval * 10)

    # -- non-deferrable wait ------------------------------------------------------------------------------
    def _wait_sync(
        self, check: Callable[[], _SyncPoll], deadline: float, max_interval: float
    ) -> dict[str, Any]:
        """
        The non-deferrable wait: the trigger's rule on a worker, ending in the event dict a trigger would fire.

        ``check`` reads the work once. The interval stays at ``poll_interval`` while the work is processed
        and grows by ``QUEUED_BACKOFF_FACTOR`` (up to ``max_interval``) while it only waits in the queue.
        """
        interval = self.poll_interval
        rounds = 0
        while True:
            poll = check()
            rounds += 1
            if poll.event is not None:
                return {**poll.event, "poll_rounds": rounds}
            if time.time() >= deadline:
                return poll.timeout_event
            if poll.running:
                interval = self.poll_interval
            time.sleep(min(interval, max(deadline - time.time(), 0)))
            if not poll.running:
                interval = min(interval * QUEUED_BACKOFF_FACTOR, max_interval)


class ConnectifImportOperator(_ConnectifQueuedWorkOperator):
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
        ``claimed_imports()`` (e.g. ``connectif_sync.state.StateStore``); closed after use when it has
        ``close()``. None: re-attachment within the task's own tries only.
    """

    template_fields: Sequence[str] = ("file_path", "import_type", "coupon_set_id", "delimiter")
    operator_extra_links = (ConnectifRunTabLink(),)
    ui_color = "#d9ecff"
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
        poll_interval: float = 30.0,
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

    queue_kind = "imports"
    queue_limit = MAX_QUEUED_IMPORTS
    queue_full_code = "E0401"
    failed_error = ConnectifImportFailedError

    @property
    def _subject(self) -> str:
        return f"import of {self.file_path}"

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resumed when the trigger fired: summarise, or fail clearly."""
        self._raise_unless_success(event)
        # upload + the trigger's status polls (+ the error report, counted in _complete)
        rounds = event.get("poll_rounds")
        return self._complete(context, event["imports"][0], requests=None if rounds is None else 1 + int(rounds))

    # -- steps --------------------------------------------------------------------------------------------
    def _run(self, context: Context, deadline: float) -> Any:
        hook = self.hook
        store = _state_store(context)
        ledger = self.upload_ledger() if self.upload_ledger is not None else None
        try:
            return self._run_with(context, deadline, hook, store, ledger)
        finally:
            close = getattr(ledger, "close", None)
            if callable(close):
                close()

    def _run_with(self, context: Context, deadline: float, hook: ConnectifHook, store: Any, ledger: Any) -> Any:
        resource = self._reattach(hook, store) or self._reconcile(hook, store, ledger)
        if resource is not None:
            status = parse_import_status(resource.get("status"))
            if status is ImportStatus.FINISHED:
                self.log.info("Import %s of %s had already finished", resource["id"], self.file_path)
                return self._complete(context, resource)
            self.log.info("Re-attaching to import %s (%s) of %s", resource["id"], status.value, self.file_path)
            return self._wait(context, str(resource["id"]), deadline)
        path = str(self.file_path)
        while True:
            # The intent goes first, where a retry and a later run will look: should this process die before
            # the upload's answer arrives, they find the import in the account's list instead of uploading again.
            started = time.time()
            rows = count_csv_rows(Path(path), self.delimiter) if Path(path).is_file() else None
            intent = {"file_path": path, "file": _fingerprint(path), "upload_started": started, "rows": rows}
            self._remember(store, intent)
            if ledger is not None:
                ledger.record_upload(path, started_at=started, rows=rows)
            try:
                created = hook.create_import(
                    path,
                    self.import_type,
                    delimiter=self.delimiter,
                    override_existing=self.override_existing,
                    update_only_empty_fields=self.update_only_empty_fields,
                    coupon_set_id=self.coupon_set_id,
                )
                break
            except ConnectifImportQueueFullError:
                self._forget_intent(store, path)  # a definite "no": nothing to reconcile later
                self._await_queue_slot(hook, deadline)
            except ConnectifError as exc:
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                    self._forget_intent(store, path)
                raise
        import_id = str(created["id"])
        self._remember(store, {**intent, "import_id": import_id})
        if ledger is not None:
            ledger.record_upload(path, started_at=started, rows=rows, import_id=import_id)
        self.log.info("Uploaded %s as import %s (%s rows)", path, import_id, created.get("total"))
        return self._wait(context, import_id, deadline)

    def _forget_intent(self, store: Any, path: str) -> None:
        self._remember(store, {"file_path": path, "file": _fingerprint(path)})

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

    def _reattach(self, hook: ConnectifHook, store: Any) -> dict[str, Any] | None:
        """The import of an earlier try of this task for the same file, unless it failed or vanished."""
        saved = self._recall(store)
        if not self._same_file(saved) or not saved.get("import_id"):
            return None
        return self._usable(hook, str(saved["import_id"]), "an earlier try")

    def _same_file(self, saved: Any) -> bool:
        """Whether ``saved`` (from task_state_store) is about this very file, unchanged since."""
        if not isinstance(saved, dict) or saved.get("file_path") != str(self.file_path):
            return False
        current = _fingerprint(self.file_path)
        if current is not None and saved.get("file") not in (None, current):
            # The file was written again (the task was cleared with its upstream): its rows must be sent, not
            # the old import's summary returned.
            self.log.info("%s changed since the earlier try; uploading it again", self.file_path)
            return False
        return True

    def _usable(self, hook: ConnectifHook, import_id: str, whose: str) -> dict[str, Any] | None:
        """The import ``import_id`` unless it failed, was cancelled or no longer exists."""
        try:
            resource = hook.get_import(import_id)
        except ConnectifNotFoundError:
            self.log.warning("Import %s of %s no longer exists; uploading again", import_id, whose)
            return None
        status = parse_import_status(resource.get("status"))
        if status in (ImportStatus.ERROR, ImportStatus.CANCELLED):
            self.log.warning("Import %s of %s ended %s; uploading again", import_id, whose, status.value)
            return None
        return resource

    def _reconcile(self, hook: ConnectifHook, store: Any, ledger: Any) -> dict[str, Any] | None:
        """Before uploading: the import an earlier upload of this file's content created, if there is one.

        * This task's earlier try recorded its intent but no import id (it died waiting for the upload's
          answer): the account's import list is searched for the import that upload created.
        * ``upload_ledger`` knows an unconfirmed upload of the same content by an earlier run (its file was
          superseded by this run's identical one): re-attach to its import, or search the list as above.
        Whatever is found is recorded at once, like a fresh upload.
        """
        path = str(self.file_path)
        found: dict[str, Any] | None = None
        started: float | None = None
        rows: int | None = None
        saved = self._recall(store)
        if self._same_file(saved) and saved.get("upload_started") and not saved.get("import_id"):
            started, rows = float(saved["upload_started"]), saved.get("rows")
            found = self._search(hook, ledger, started, rows, "an earlier try")
        if found is None and ledger is not None:
            earlier = ledger.earlier_upload(path)
            if earlier is not None:
                started, rows = float(earlier["started_at"]), earlier.get("rows")
                whose = f"an earlier run ({earlier['path']})"
                if earlier.get("import_id"):
                    found = self._usable(hook, str(earlier["import_id"]), whose)
                    if found is not None and not self._same_kind(found):
                        found = None  # same bytes, other import (e.g. the same codes for another coupon set)
                else:
                    found = self._search(hook, ledger, started, rows, whose)
        if found is None or started is None:
            return None
        import_id = str(found["id"])
        self._remember(
            store, {"file_path": path, "file": _fingerprint(path), "upload_started": started, "rows": rows,
                    "import_id": import_id},
        )  # fmt: skip
        if ledger is not None:
            ledger.record_upload(path, started_at=started, rows=rows, import_id=import_id)
        return found

    def _same_kind(self, resource: dict[str, Any]) -> bool:
        """Whether an import has this task's type and options (those the resource shows)."""
        if resource.get("type") not in (None, self.import_type):
            return False
        opts = resource.get("options") or {}
        return all(str(opts.get(k)).lower() == str(v).lower() for k, v in self._options().items() if k in opts)

    def _search(
        self, hook: ConnectifHook, ledger: Any, started: float, rows: int | None, whose: str
    ) -> dict[str, Any] | None:
        """The account's import an upload started at ``started`` created (type, options, rows), if any."""
        exclude = ledger.claimed_imports() if ledger is not None else set()
        found = hook.find_created_import(
            ImportType(self.import_type), self._options(), rows, since=started, exclude=exclude
        )
        if found is None:
            self.log.info("The upload of %s by %s created no import; uploading", self.file_path, whose)
            return None
        self.log.info("The upload of %s by %s had created import %s", self.file_path, whose, found.get("id"))
        status = parse_import_status(found.get("status"))
        if status in (ImportStatus.ERROR, ImportStatus.CANCELLED):
            self.log.warning("Import %s ended %s; uploading again", found.get("id"), status.value)
            return None
        return found

    def _wait(self, context: Context, import_id: str, deadline: float) -> Any:
        trigger = ConnectifImportTrigger(import_ids=[import_id], **self._trigger_kwargs(deadline))
        self._defer_if_deferrable(trigger)
        return self.execute_complete(context, self._poll_sync(import_id, deadline, trigger.max_poll_interval))

    def _poll_sync(self, import_id: str, deadline: float, max_interval: float) -> dict[str, Any]:
        hook = self.hook

        def check() -> _SyncPoll:
            resource = hook.get_import(import_id)
            status = parse_import_status(resource.get("status"))
            if status.is_finished:
                return _SyncPoll(event={"status": "success", "imports": [resource]})
            if status.is_failed:
                return _SyncPoll(
                    event={"status": "error", "message": f"Import {import_id} is {status.value}", "imports": [resource]}
                )
            if status.is_running:
                self.log.info("Import %s %s", import_id, progress_message(resource))
            timeout = {"status": "timeout", "message": f"Import {import_id} is still {status.value}"}
            return _SyncPoll(timeout_event=timeout, running=status.is_running)

        return self._wait_sync(check, deadline, max_interval)

    def _error_report(self, resource: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """The rows of the import's error report, and whether it names every failed row.

        ``errors`` counts the failed rows; the report must list that many distinct lines. A report that is
        missing or lists fewer is read again (a fresh GET of the import mints a fresh link) a few times;
        if it stays short the summary says so (``report_complete: False``) and the rows of the file must
        not be confirmed: Connectif's answer does not prove which of them it took.
        """
        hook = self.hook
        import_id = str(resource.get("id"))
        errors = int(resource.get("errors") or 0)
        rejected: list[dict[str, Any]] = []
        if not errors:
            return rejected, True
        for attempt in range(REPORT_ATTEMPTS):
            if attempt:
                time.sleep(min(self.poll_interval, REPORT_RETRY_DELAY) * attempt)
                resource = hook.get_import(import_id)
            url = resource.get("errorReportFileUrl")
            if url:
                rejected = hook.download_error_report(str(url), import_id=import_id)
            listed = len(report_lines(rejected))
            if report_accounts_for_all(resource, listed):
                return rejected, True
            self.log.warning(
                "Import %s has %d failed rows but its error report %s (attempt %d of %d)",
                import_id, errors, f"lists {listed}" if url else "is missing (no errorReportFileUrl)",
                attempt + 1, REPORT_ATTEMPTS,
            )  # fmt: skip
        self.log.error(
            "Import %s: no complete error report after %d reads; its rows cannot be confirmed and will be sent "
            "again by the next run", import_id, REPORT_ATTEMPTS,
        )  # fmt: skip
        return rejected, False

    def _complete(self, context: Context, resource: dict[str, Any], requests: int | None = None) -> dict[str, Any]:
        errors = int(resource.get("errors") or 0)
        rejected, complete = self._error_report(resource)
        if requests is not None and errors and resource.get("errorReportFileUrl"):
            requests += 1  # the error report's download
        summary = import_summary(
            resource, rejected, str(self.file_path), report_complete=complete, api_requests=requests
        )
        self.log.info(
            "Import %s finished: %d of %d rows imported, %d rejected",
            summary["import_id"], summary["success"], summary["total"], summary["errors"],
        )
        for row in rejected[:20]:
            self.log.info("  rejected line %s field %s: %s", row["line"], row["field"], row["error"])
        total = summary["total"]
        too_many = self.max_row_errors is not None and errors > self.max_row_errors
        too_many = too_many or (
            self.max_row_error_ratio is not None and total > 0 and errors / total > self.max_row_error_ratio
        )
        if too_many:
            ti = context.get("ti")
            if ti is not None:
                ti.xcom_push(key="import_summary", value=summary)
            raise ConnectifRowErrorsExceededError(
                f"Import {summary['import_id']} of {self.file_path} rejected {errors} of {total} rows, over the "
                f"task's threshold (max_row_errors={self.max_row_errors}, "
                f"max_row_error_ratio={self.max_row_error_ratio}); the summary is in XCom 'import_summary'"
            )
        return summary


def split_date_range(from_date: str, to_date: str, max_days: int = MAX_EXPORT_RANGE_DAYS) -> list[tuple[str, str]]:
    """
    Split ``[from_date, to_date]`` into consecutive ranges Connectif accepts (at most ``max_days``).

    Dates (``YYYY-MM-DD``) split into inclusive day ranges of ``max_days`` days; date-times into ranges
    whose ends are at most ``max_days`` apart, the next range starting one second after the previous end.
    """
    date_only = len(from_date) == 10 and len(to_date) == 10
    if date_only:
        start_d, end_d = date.fromisoformat(from_date), date.fromisoformat(to_date)
        if end_d < start_d:
            raise ValueError(f"from_date {from_date} is after to_date {to_date}")
        ranges: list[tuple[str, str]] = []
        while start_d <= end_d:
            stop_d = min(start_d + timedelta(days=max_days - 1), end_d)
            ranges.append((start_d.isoformat(), stop_d.isoformat()))
            start_d = stop_d + timedelta(days=1)
        return ranges
    start, end = datetime.fromisoformat(from_date.replace("Z", "+00:00")), datetime.fromisoformat(
        to_date.replace("Z", "+00:00")
    )
    if end < start:
        raise ValueError(f"from_date {from_date} is after to_date {to_date}")
    fmt = _iso_formatter(from_date)
    out: list[tuple[str, str]] = []
    while True:
        stop = min(start + timedelta(days=max_days), end)
        out.append((fmt(start), fmt(stop)))
        if stop >= end:
            return out
        start = stop + timedelta(seconds=1)


def _iso_formatter(sample: str) -> Any:
    zulu = sample.endswith("Z")

    def _fmt(value: datetime) -> str:
        text = value.isoformat()
        return text.replace("+00:00", "Z") if zulu else text

    return _fmt


class ConnectifExportOperator(_ConnectifQueuedWorkOperator):
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
        poll_interval: float = 30.0,
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

    queue_kind = "exports"
    queue_limit = MAX_QUEUED_EXPORTS
    queue_full_code = "E0301"
    failed_error = ConnectifExportFailedError

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

    def _run(self, context: Context, deadline: float) -> Any:
        hook = self.hook
        store = _state_store(context)
        plan = self.plan()
        saved = self._recall(store)
        ids: list[str | None] = [None] * len(plan)
        if isinstance(saved, dict) and saved.get("plan") == plan:
            ids = list(saved.get("export_ids") or ids)
        for index, request in enumerate(plan):
            if ids[index] is not None:
                try:
                    existing = hook.get_export(str(ids[index]))
                    if parse_export_status(existing.get("status")) is not ExportStatus.ERROR:
                        continue
                    self.log.warning("Export %s of an earlier try ended in error; exporting again", ids[index])
                except ConnectifNotFoundError:
                    self.log.warning("Export %s of an earlier try no longer exists; exporting again", ids[index])
            try:
                created = hook.create_export(**request)
            except ConnectifExportQueueFullError:
                self._await_queue_slot(hook, deadline)
                return self._run(context, deadline)
            ids[index] = str(created["id"])
            self.log.info("Created %s export %s (%s)", self.export_type, ids[index], request)
            self._remember(store, {"plan": plan, "export_ids": ids})
        export_ids = [str(i) for i in ids]
        self._defer_if_deferrable(ConnectifExportTrigger(export_ids=export_ids, **self._trigger_kwargs(deadline)))
        return self.execute_complete(context, self._poll_sync(hook, export_ids, deadline))

    def _poll_sync(self, hook: ConnectifHook, export_ids: list[str], deadline: float) -> dict[str, Any]:
        def check() -> _SyncPoll:
            exports = [hook.get_export(i) for i in export_ids]
            statuses = [parse_export_status(e.get("status")) for e in exports]
            if any(s.is_failed for s in statuses):
                return _SyncPoll(event={"status": "error", "message": "an export ended in error", "exports": exports})
            if all(s.is_finished for s in statuses):
                return _SyncPoll(event={"status": "success", "exports": exports})
            timeout = {"status": "timeout", "message": f"exports {export_ids} not finished", "exports": exports}
            return _SyncPoll(timeout_event=timeout, running=any(s.is_running for s in statuses))

        return self._wait_sync(check, deadline, self.max_poll_interval or self.poll_interval * 10)

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
