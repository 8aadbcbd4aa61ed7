"""ConnectifHook: the Connectif REST API as one short documented method per endpoint.

The hook reads like the API's table of contents: the endpoints are ``(METHOD, path)`` constants below, and
each method names its endpoint. Transport (settings, the shared rate-limit bucket, retries, sync and async
HTTP, paging) is in :mod:`connectif_provider.hooks.base`. The non-deferrable waits
(:meth:`ConnectifHook.wait_for_imports` / :meth:`~ConnectifHook.wait_for_exports`) live here too, following
the one poll policy of :mod:`connectif_provider.utils.polling`; operators only choose between them and
deferring on the job trigger. The hook holds no job state.

The client relies only on the [doc] points of the contract: it follows ``links.next`` verbatim, reads
``id``/``total`` of a created import, and treats every [assumed] shape defensively (a duplicate purchase
may come as 409 or as a 400 saying "already exists"; a 429 may lack ``Retry-After``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from connectif_provider.exceptions import (
    ConnectifError,
    ConnectifExportFailedError,
    ConnectifPayloadTooLargeError,
    ConnectifServerError,
    ConnectifTransportError,
    ConnectifValidationError,
    is_duplicate_purchase,
    is_expired_link,
)
from connectif_provider.hooks.base import (
    FILE_TIMEOUT_SECONDS,
    UI_FIELD_BEHAVIOUR,
    ConnectifBaseHook,
    ConnectifSettings,
    settings_from_connection,
)
from connectif_provider.models import (
    MAX_FILE_BYTES,
    ExportStatus,
    ExportType,
    ImportType,
    JobKind,
    RemoteStatus,
    parse_export_status,
    parse_import_status,
)
from connectif_provider.utils.files import count_csv_rows, parse_error_report, safe_extract_csvs
from connectif_provider.utils.polling import JobsWatch, PollPolicy, QueueWatch, Round, poll_until_done
from connectif_provider.utils.reconcile import claim, created_by_upload

__all__ = [
    "UI_FIELD_BEHAVIOUR",
    "ConnectifHook",
    "ConnectifSettings",
    "count_csv_rows",
    "parse_error_report",
    "settings_from_connection",
]

log = logging.getLogger(__name__)

#: How many times an export is read again for a fresh ``fileUrl`` when its link was refused as expired.
EXPIRED_URL_REFETCHES = 2
#: Items of a list read to count active jobs: Connectif works in creation order, so the first 100
#: finished ones mean no older job is still queued.
ACTIVE_SCAN_STOP_AFTER_TERMINAL = 100

# -- the endpoints (paths relative to the connection's base URL) ----------------------------------------------
CREATE_IMPORT = ("POST", "/imports")
LIST_IMPORTS = ("GET", "/imports")
GET_IMPORT = ("GET", "/imports/{import_id}")
DELETE_IMPORT = ("DELETE", "/imports/{import_id}")
CREATE_EXPORT = ("POST", "/exports")
CREATE_DATA_EXPLORER_EXPORT = ("POST", "/exports/type/data-explorer")
LIST_EXPORTS = ("GET", "/exports")
GET_EXPORT = ("GET", "/exports/{export_id}")
DELETE_EXPORT = ("DELETE", "/exports/{export_id}")
GET_CONTACT = ("GET", "/contacts/{email}")
UPSERT_CONTACT = ("PATCH", "/contacts/{email}")
DELETE_CONTACT = ("DELETE", "/contacts/email/{email}")
GET_PRODUCT = ("GET", "/products/product-id/{product_id}")
UPSERT_PRODUCT = ("PATCH", "/products/product-id/{product_id}")
DELETE_PRODUCT = ("DELETE", "/products/product-id/{product_id}")
CREATE_PURCHASE = ("POST", "/purchases")
GET_PURCHASE = ("GET", "/purchases/purchase-id/{purchase_id}")
DELETE_PURCHASE = ("DELETE", "/purchases/purchase-id/{purchase_id}")
LIST_COUPON_SETS = ("GET", "/coupon-sets")
GET_COUPON_SET = ("GET", "/coupon-sets/{coupon_set_id}")
GET_WORKFLOW = ("GET", "/workflows/{workflow_id}")


def _email(address: str) -> str:
    """The address as the path takes it; anything without an ``@`` is refused before a request is spent."""
    value = address.strip()
    if not value or "@" not in value:
        raise ConnectifValidationError(f"{address!r} is not an email address")
    return value


def _count_active(items: Iterator[dict[str, Any]], parse: Callable[[object], RemoteStatus]) -> int:
    """Count active items; since Connectif processes in creation order, stop after a page of terminal ones."""
    active = 0
    seen_terminal = 0
    for item in items:
        try:
            status = parse(item.get("status"))
        except ValueError:
            continue
        if status.is_active:
            active += 1
        else:
            seen_terminal += 1
            if seen_terminal >= ACTIVE_SCAN_STOP_AFTER_TERMINAL:
                break
    return active


def _import_request(
    path: Path,
    kind: ImportType,
    delimiter: str,
    override_existing: bool,
    update_only_empty_fields: bool,
    coupon_set_id: str | None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """The multipart form of an import and the options the Import resource will show; Connectif's rules
    are checked here so that a bad request costs no upload."""
    if delimiter not in (",", ";"):
        raise ValueError(f"delimiter must be ',' or ';', got {delimiter!r}")
    if update_only_empty_fields and not override_existing:
        raise ValueError("update_only_empty_fields=True needs override_existing=True (Connectif's rule)")
    if kind is ImportType.COUPONS and not coupon_set_id:
        raise ValueError("a coupons import needs coupon_set_id (the set that receives the codes)")
    if not path.is_file():
        raise FileNotFoundError(f"import file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConnectifPayloadTooLargeError(
            f"{path} is {size} bytes; Connectif accepts at most {MAX_FILE_BYTES} bytes per import file: "
            "split it into smaller chunks",
            status=413,
        )
    options: dict[str, Any] = {
        "delimiter": delimiter,
        "overrideExisting": override_existing,
        "updateOnlyEmptyFields": update_only_empty_fields,
    }
    form = {
        "type": kind.value,
        "delimiter": delimiter,
        "overrideExisting": "true" if override_existing else "false",
        "updateOnlyEmptyFields": "true" if update_only_empty_fields else "false",
    }
    if coupon_set_id:
        form["couponSetId"] = coupon_set_id
        options["couponSetId"] = coupon_set_id
    return form, options


class ConnectifHook(ConnectifBaseHook):
    """
    Talk to the Connectif API through an Airflow connection of type ``connectif``.

    :param connectif_conn_id: the connection (host = API base URL, password = API key, extras = rate limit).
    """

    conn_name_attr = "connectif_conn_id"
    default_conn_name = "connectif_default"
    conn_type = "connectif"
    hook_name = "Connectif"

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's Test button: one cheap authenticated GET."""
        try:
            self._call(LIST_IMPORTS, params={"limit": 1})
        except ConnectifError as exc:
            return False, str(exc)
        return True, "Connection to Connectif works"

    # -- imports --------------------------------------------------------------------------------------------
    def create_import(
        self,
        file_path: str | Path,
        import_type: ImportType | str,
        *,
        delimiter: str = ",",
        override_existing: bool = False,
        update_only_empty_fields: bool = False,
        coupon_set_id: str | None = None,
    ) -> dict[str, Any]:
        """
        Upload a CSV as a new import and return the Import resource.

        If the connection drops (or a 5xx arrives) after the file was sent, the outcome is unknown: before
        uploading again the import list is searched for an import this call created (same type, options
        and row count, created since the first attempt), so a retry never creates a duplicate import.

        :param file_path: the CSV (at most 50 MB).
        :param import_type: ``contacts``, ``products`` or ``coupons``.
        :param delimiter: ``,`` or ``;``.
        :param override_existing: overwrite existing elements.
        :param update_only_empty_fields: only fill empty fields (needs ``override_existing``).
        :param coupon_set_id: the set receiving the codes (coupons imports only, and required there).
        """
        path = Path(file_path)
        kind = ImportType(str(import_type))
        form, options = _import_request(
            path, kind, delimiter, override_existing, update_only_empty_fields, coupon_set_id
        )
        rows = count_csv_rows(path, delimiter)
        started = time.time()
        url = self._url(CREATE_IMPORT[1])
        outcome_unknown = False
        for attempt in self._retrying():
            with attempt:
                if outcome_unknown and (found := self.find_created_import(kind, options, rows, since=started)):
                    log.info("Reconciled an upload of unknown outcome with import %s", found.get("id"))
                    return found
                try:
                    with path.open("rb") as fh:
                        response = self._send_once(
                            CREATE_IMPORT[0],
                            url,
                            data=form,
                            files={"file": (path.name, fh, "text/csv")},
                            timeout=max(self.get_settings().timeout, FILE_TIMEOUT_SECONDS),
                        )
                except ConnectifTransportError as exc:
                    outcome_unknown = outcome_unknown or bool(exc.body.get("outcome_unknown"))
                    raise
                except ConnectifServerError:
                    outcome_unknown = True
                    raise
                created: dict[str, Any] = response.json()
                claim(str(created.get("id")))
                return created
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def find_created_import(
        self,
        import_type: ImportType,
        options: dict[str, Any],
        rows: int | None,
        *,
        since: float,
        exclude: Collection[str] = (),
    ) -> dict[str, Any] | None:
        """
        The import an upload started at ``since`` created, if any (see :mod:`connectif_provider.utils.reconcile`).

        :param options: the import options as the Import resource shows them.
        :param rows: the file's data rows (Connectif's ``total``); None matches any.
        :param exclude: ids other uploads are known to own.
        """
        imports = self._paginate(LIST_IMPORTS[1], params={"limit": 100})
        return created_by_upload(imports, import_type, options, rows, since=since, exclude=exclude)

    def get_import(self, import_id: str) -> dict[str, Any]:
        """The Import resource (status, counts, ``errorReportFileUrl``)."""
        return dict(self._call(GET_IMPORT, {"import_id": import_id}))

    def list_imports(self, **params: Any) -> Iterator[dict[str, Any]]:
        """Every import, newest first, following the pages (``params``: the API's filters)."""
        return self._paginate(LIST_IMPORTS[1], params=params or None)

    def delete_import(self, import_id: str) -> None:
        """Cancel a queued import (Connectif answers 409 once it runs)."""
        self._call(DELETE_IMPORT, {"import_id": import_id})

    def count_active_imports(self) -> int:
        """Imports queued or in progress (both count towards the account's 10)."""
        return _count_active(self._paginate(LIST_IMPORTS[1], params={"limit": 100}), parse_import_status)

    def download_error_report(self, url: str, *, import_id: str | None = None) -> list[dict[str, Any]]:
        """
        Rows of an import's error report. Tried without the key first (it may be pre-signed storage). With
        ``import_id``, a link refused as expired (the event that carried it may be old) is replaced by the
        one a fresh GET of the import mints, up to ``EXPIRED_URL_REFETCHES`` times.
        """
        for refetch in range(EXPIRED_URL_REFETCHES + 1):
            try:
                return parse_error_report(self._download_text(url))
            except ConnectifError as exc:
                if import_id is None or refetch == EXPIRED_URL_REFETCHES or not is_expired_link(exc):
                    raise
                log.warning(
                    "The error report link of import %s was refused (%s); reading the import again for a fresh one",
                    import_id,
                    exc.detail,
                )
                fresh = self.get_import(import_id).get("errorReportFileUrl")
                if not fresh:
                    raise
                url = str(fresh)
        raise AssertionError("unreachable: the loop returns or raises")

    async def aget_import(self, import_id: str) -> dict[str, Any]:
        """:meth:`get_import` for the triggerer."""
        return dict(await self._acall(GET_IMPORT, {"import_id": import_id}))

    async def acount_active_imports(self) -> int:
        """:meth:`count_active_imports` for the triggerer (at most 5 pages)."""
        items = await self._apaginate(LIST_IMPORTS[1], params={"limit": 100}, max_pages=5)
        return _count_active(iter(items), parse_import_status)

    def wait_for_imports(
        self, import_ids: list[str], *, poll_interval: float, max_poll_interval: float | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """
        Wait on this worker until every import is terminal; return the event the job trigger would fire.

        :param poll_interval: seconds between polls while an import runs (the interval grows while queued).
        :param max_poll_interval: cap of the grown interval (default: the poll policy's).
        :param deadline: epoch seconds; the event is ``timeout`` after it.
        """
        return self.wait_for_jobs(JobKind.IMPORTS, import_ids, PollPolicy(poll_interval, max_poll_interval, deadline))

    # -- exports --------------------------------------------------------------------------------------------
    def create_export(
        self,
        export_type: ExportType | str,
        *,
        delimiter: str = ",",
        date_format: str = "ISO",
        segment_id: str | None = None,
        from_date: str | None = None,
        to_date: str | None = None,
        activity_types: list[str] | None = None,
        report_id: str | None = None,
    ) -> dict[str, Any]:
        """
        Create one export (the caller splits ranges over 31 days; see ``utils.dates.split_date_range``).

        :param export_type: ``contacts``, ``activities`` or ``data-explorer``.
        :param segment_id: restrict contacts/activities to a segment.
        :param from_date: start (activities and data-explorer need it; data-explorer takes ``YYYY-MM-DD``).
        :param to_date: end, at most 31 days after ``from_date``.
        :param activity_types: activities only: which activity types.
        :param report_id: data-explorer only: the report to export.
        """
        kind = ExportType(str(export_type))
        if kind is ExportType.DATA_EXPLORER:
            if not (report_id and from_date and to_date):
                raise ValueError("a data-explorer export needs report_id, from_date and to_date (YYYY-MM-DD)")
            filters = {"reportId": report_id, "fromDate": from_date[:10], "toDate": to_date[:10]}
            return dict(self._call(CREATE_DATA_EXPLORER_EXPORT, json={"delimiter": delimiter, "filters": filters}))
        if kind is ExportType.ACTIVITIES and not (from_date and to_date):
            raise ValueError("an activities export needs from_date and to_date (at most 31 days apart)")
        given = {"segmentId": segment_id, "fromDate": from_date, "toDate": to_date}
        if kind is ExportType.ACTIVITIES and activity_types:
            given["activityTypes"] = list(activity_types)  # type: ignore[assignment]
        body = {
            "exportType": kind.value,
            "delimiter": delimiter,
            "dateFormat": date_format,
            "filters": {k: v for k, v in given.items() if v},
            "version": "v1",
        }
        return dict(self._call(CREATE_EXPORT, json=body))

    def get_export(self, export_id: str) -> dict[str, Any]:
        """The Export resource (status, progress, a fresh pre-signed ``fileUrl`` once finished)."""
        return dict(self._call(GET_EXPORT, {"export_id": export_id}))

    def list_exports(self, **params: Any) -> Iterator[dict[str, Any]]:
        """Every export, newest first, following the pages."""
        return self._paginate(LIST_EXPORTS[1], params=params or None)

    def delete_export(self, export_id: str) -> None:
        """Delete an export."""
        self._call(DELETE_EXPORT, {"export_id": export_id})

    def count_active_exports(self) -> int:
        """Exports queued or in progress (both count towards the account's 5)."""
        return _count_active(self._paginate(LIST_EXPORTS[1], params={"limit": 100}), parse_export_status)

    def download_export(self, export_id: str, target_dir: str | Path) -> list[Path]:
        """
        Download a finished export's ZIP (without the API key: ``fileUrl`` is pre-signed) and unpack its
        CSVs into ``target_dir``. The export is read again first, because each GET mints a fresh URL; a URL
        that expired before (or while) it was fetched is refused (403), so the export is read again for a new
        one, up to ``EXPIRED_URL_REFETCHES`` times.
        """
        with tempfile.TemporaryDirectory(prefix="connectif-export-") as tmp:
            zip_path = Path(tmp) / f"{export_id}.zip"
            for refetch in range(EXPIRED_URL_REFETCHES + 1):
                url = self._export_file_url(export_id)
                try:
                    for attempt in self._retrying():
                        with attempt:
                            self._stream_to(url, zip_path)
                    break
                except ConnectifError as exc:
                    if refetch == EXPIRED_URL_REFETCHES or not is_expired_link(exc):
                        raise
                    log.warning(
                        "The download link of export %s was refused (%s); reading the export again for a fresh one",
                        export_id,
                        exc.detail,
                    )
            return safe_extract_csvs(zip_path, Path(target_dir))

    def _export_file_url(self, export_id: str) -> str:
        """A fresh pre-signed ``fileUrl`` of a finished export (each GET mints a new one)."""
        export = self.get_export(export_id)
        status = parse_export_status(export.get("status"))
        if status is not ExportStatus.FINISHED or not export.get("fileUrl"):
            raise ConnectifExportFailedError(
                f"Export {export_id} is {status.value}, not finished with a file; nothing to download"
            )
        return self._url(str(export["fileUrl"]))

    async def aget_export(self, export_id: str) -> dict[str, Any]:
        """:meth:`get_export` for the triggerer."""
        return dict(await self._acall(GET_EXPORT, {"export_id": export_id}))

    async def acount_active_exports(self) -> int:
        """:meth:`count_active_exports` for the triggerer (at most 5 pages)."""
        items = await self._apaginate(LIST_EXPORTS[1], params={"limit": 100}, max_pages=5)
        return _count_active(iter(items), parse_export_status)

    def wait_for_exports(
        self, export_ids: list[str], *, poll_interval: float, max_poll_interval: float | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Wait on this worker until every export is terminal (as :meth:`wait_for_imports`)."""
        return self.wait_for_jobs(JobKind.EXPORTS, export_ids, PollPolicy(poll_interval, max_poll_interval, deadline))

    # -- either kind of job: what the trigger and the waits use ----------------------------------------------
    def get_job(self, kind: JobKind, job_id: str) -> dict[str, Any]:
        """The Import or Export resource."""
        return self.get_import(job_id) if kind is JobKind.IMPORTS else self.get_export(job_id)

    async def aget_job(self, kind: JobKind, job_id: str) -> dict[str, Any]:
        return await (self.aget_import(job_id) if kind is JobKind.IMPORTS else self.aget_export(job_id))

    def count_active(self, kind: JobKind) -> int:
        """Jobs of ``kind`` queued or in progress in the account."""
        return self.count_active_imports() if kind is JobKind.IMPORTS else self.count_active_exports()

    async def acount_active(self, kind: JobKind) -> int:
        return await (self.acount_active_imports() if kind is JobKind.IMPORTS else self.acount_active_exports())

    def wait_for_jobs(self, kind: JobKind, job_ids: list[str], policy: PollPolicy) -> dict[str, Any]:
        """The non-deferrable wait: the job trigger's loop on this worker, ending in the event it would fire."""
        watch = JobsWatch(kind, [str(i) for i in job_ids], log)

        def poll(interval: float) -> Round:
            for job_id in watch.pending():
                watch.latest[job_id] = self.get_job(kind, job_id)
            return watch.assess(interval)

        return poll_until_done(policy, poll, timeout_event=watch.timeout_event, error_event=watch.error_event)

    def wait_for_queue_slot(self, kind: JobKind, policy: PollPolicy, limit: int | None = None) -> dict[str, Any]:
        """Wait on this worker until the account's ``kind`` queue has a free slot (the queue-slot trigger's loop).

        :param limit: the queue size (default: the account's, 10 imports / 5 exports).
        """
        watch = QueueWatch(kind, limit or kind.max_queued, log)
        return poll_until_done(
            policy,
            lambda interval: watch.assess(self.count_active(kind)),
            timeout_event=watch.timeout_event,
            error_event=watch.error_event,
        )

    # -- contacts -------------------------------------------------------------------------------------------
    def get_contact(self, email_address: str) -> dict[str, Any] | None:
        """The contact, or None if it does not exist."""
        return self._get_or_none(GET_CONTACT, {"email": _email(email_address)})

    def upsert_contact(self, email_address: str, fields: dict[str, Any]) -> dict[str, Any]:
        """PATCH a contact by email; Connectif creates it when absent."""
        return dict(self._call(UPSERT_CONTACT, {"email": _email(email_address)}, json=fields) or {})

    def delete_contact(self, email_address: str) -> bool:
        """Delete a contact; False when it did not exist (which counts as done for an erasure)."""
        return self._delete_if_exists(DELETE_CONTACT, {"email": _email(email_address)})

    # -- products -------------------------------------------------------------------------------------------
    def upsert_product(self, product_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """PATCH a product by its id; Connectif creates it when absent."""
        return dict(self._call(UPSERT_PRODUCT, {"product_id": product_id}, json=fields) or {})

    def get_product(self, product_id: str) -> dict[str, Any] | None:
        """The product, or None if it is not in the catalog."""
        return self._get_or_none(GET_PRODUCT, {"product_id": product_id})

    def delete_product(self, product_id: str) -> bool:
        """Delete a product; False when it did not exist."""
        return self._delete_if_exists(DELETE_PRODUCT, {"product_id": product_id})

    # -- purchases ------------------------------------------------------------------------------------------
    def create_purchase(self, purchase: dict[str, Any], *, trigger_purchase_event: bool = False) -> dict[str, Any]:
        """
        Create a purchase. Idempotent by ``purchaseId``: a duplicate (409, or a 4xx saying it already
        exists) is success, returned as ``{"purchaseId": ..., "duplicate": True}``. E0101/E0102/E0103 raise.

        :param trigger_purchase_event: let Connectif's workflows react to it (off for back-filled history).
        """
        if not purchase.get("purchaseId"):
            raise ValueError("a purchase needs a purchaseId (it makes replays idempotent)")
        params = {"triggerPurchaseEvent": "true" if trigger_purchase_event else "false"}
        try:
            created = self._call(CREATE_PURCHASE, params=params, json=purchase) or {}
        except ConnectifError as exc:
            if is_duplicate_purchase(exc):
                return {"purchaseId": purchase["purchaseId"], "duplicate": True}
            raise
        return {**dict(created), "duplicate": False}

    def get_purchase(self, purchase_id: str) -> dict[str, Any] | None:
        """The purchase, or None if Connectif does not have it."""
        return self._get_or_none(GET_PURCHASE, {"purchase_id": purchase_id})

    def delete_purchase(self, purchase_id: str) -> bool:
        """Delete a purchase; False when it did not exist."""
        return self._delete_if_exists(DELETE_PURCHASE, {"purchase_id": purchase_id})

    # -- coupon sets and workflows -----------------------------------------------------------------------
    def list_coupon_sets(self) -> Iterator[dict[str, Any]]:
        """Every coupon set (with its count of available codes)."""
        return self._paginate(LIST_COUPON_SETS[1])

    def get_coupon_set(self, coupon_set_id: str) -> dict[str, Any]:
        """One coupon set."""
        return dict(self._call(GET_COUPON_SET, {"coupon_set_id": coupon_set_id}))

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """One workflow (its status tells whether purchases would trigger it)."""
        return dict(self._call(GET_WORKFLOW, {"workflow_id": workflow_id}))
