"""What a finished import tells: its error report (read until it names every failed row) and its summary.

The summary is the import operator's XCom, read by the sync library to confirm the rows Connectif took and
keep the rejected ones; its keys are a persisted contract and do not change.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from connectif_provider.utils.files import report_lines
from connectif_provider.utils.reconcile import import_duration

if TYPE_CHECKING:
    from connectif_provider.hooks.connectif import ConnectifHook

log = logging.getLogger(__name__)

#: Reads of an import's error report before a short or missing one is given up on.
REPORT_ATTEMPTS = 3
#: Seconds before the second read (the third waits twice as long); capped by the task's poll_interval.
REPORT_RETRY_DELAY = 5.0


def report_accounts_for_all(resource: dict[str, Any], listed: int) -> bool:
    """Whether an error report naming ``listed`` distinct lines accounts for every failed row: as many lines
    as ``errors``, or (should Connectif count errors per field) the lines plus ``success`` make ``total``."""
    errors, success, total = (int(resource.get(k) or 0) for k in ("errors", "success", "total"))
    return listed >= errors or (listed > 0 and success + listed == total)


def read_error_report(
    hook: ConnectifHook, resource: dict[str, Any], *, poll_interval: float, logger: Any = log
) -> tuple[list[dict[str, Any]], bool]:
    """The rows of the import's error report, and whether it names every failed row.

    ``errors`` counts the failed rows; the report must list that many distinct lines. A report that is
    missing or lists fewer is read again (a fresh GET of the import mints a fresh link) a few times;
    if it stays short the summary says so (``report_complete: False``) and the rows of the file must
    not be confirmed: Connectif's answer does not prove which of them it took.
    """
    import_id = str(resource.get("id"))
    errors = int(resource.get("errors") or 0)
    rejected: list[dict[str, Any]] = []
    if not errors:
        return rejected, True
    for attempt in range(REPORT_ATTEMPTS):
        if attempt:
            time.sleep(min(poll_interval, REPORT_RETRY_DELAY) * attempt)
            resource = hook.get_import(import_id)
        url = resource.get("errorReportFileUrl")
        if url:
            rejected = hook.download_error_report(str(url), import_id=import_id)
        listed = len(report_lines(rejected))
        if report_accounts_for_all(resource, listed):
            return rejected, True
        logger.warning(
            "Import %s has %d failed rows but its error report %s (attempt %d of %d)",
            import_id, errors, f"lists {listed}" if url else "is missing (no errorReportFileUrl)",
            attempt + 1, REPORT_ATTEMPTS,
        )  # fmt: skip
    logger.error(
        "Import %s: no complete error report after %d reads; its rows cannot be confirmed and will be sent "
        "again by the next run", import_id, REPORT_ATTEMPTS,
    )  # fmt: skip
    return rejected, False


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
        "duration_s": import_duration(resource),
        "api_requests": api_requests,
    }


def too_many_errors(summary: dict[str, Any], max_row_errors: int | None, max_row_error_ratio: float | None) -> bool:
    """Whether the rejected rows pass the task's threshold (count or ratio; None: no threshold)."""
    errors, total = int(summary["errors"]), int(summary["total"])
    if max_row_errors is not None and errors > max_row_errors:
        return True
    return max_row_error_ratio is not None and total > 0 and errors / total > max_row_error_ratio
