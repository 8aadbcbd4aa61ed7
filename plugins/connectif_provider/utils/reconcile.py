"""Upload reconciliation: which import in the account an upload of unknown outcome created.

An upload whose answer never arrived (dropped connection, 5xx, a worker that died) may or may not have
created an import. Uploading again could import the file twice, so the account's import list is searched
first for an import of the same type, options and row count created since the upload started. What the
search finds is *claimed* in this process so that two uploads of identical files never both take it.

:class:`ImportUpload` is the import operator's side: the intent (file, size, row count, upload start) is
stored in ``task_state_store`` *before* the upload and the import id as soon as it is known, so a retry
re-attaches to that import, and a retry whose earlier try died waiting for the answer finds it in the
account's list. The stored dicts under ``connectif_import`` are a persisted format and do not change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from connectif_provider.exceptions import ConnectifNotFoundError
from connectif_provider.models import ImportStatus, ImportType, parse_import_status
from connectif_provider.utils.dates import parse_iso
from connectif_provider.utils.files import count_csv_rows, fingerprint

#: Imports created up to this long before the upload's recorded start still match (clock skew).
UNKNOWN_OUTCOME_SKEW_SECONDS = 120.0

_claimed_import_ids: set[str] = set()
_claimed_lock = threading.Lock()


def claim(import_id: str) -> bool:
    """Mark an import as owned by an upload of this process; False when another upload owns it already."""
    with _claimed_lock:
        if import_id in _claimed_import_ids:
            return False
        _claimed_import_ids.add(import_id)
        return True


def parse_time(value: Any) -> float | None:
    """A resource's ISO-8601 timestamp (``Z`` or offset) as epoch seconds; None when absent or unreadable."""
    if not value:
        return None
    try:
        return parse_iso(value).timestamp()
    except ValueError:
        return None


def same_options(resource: dict[str, Any], options: dict[str, Any]) -> bool:
    """Whether the options the resource shows equal ``options`` (case-insensitive text; absent ones pass)."""
    shown = resource.get("options") or {}
    return all(str(shown.get(k)).lower() == str(v).lower() for k, v in options.items() if k in shown)


def created_by_upload(
    imports: Iterable[dict[str, Any]],
    import_type: ImportType,
    options: dict[str, Any],
    rows: int | None,
    *,
    since: float,
    exclude: Collection[str] = (),
) -> dict[str, Any] | None:
    """The oldest unclaimed import of ``imports`` (newest first, as the API lists them) an upload started at
    ``since`` may have created: API origin, same type, options and row count, not in ``exclude``."""
    horizon = since - UNKNOWN_OUTCOME_SKEW_SECONDS
    candidates: list[dict[str, Any]] = []
    for item in imports:
        created_at = parse_time(item.get("createdAt"))
        if created_at is not None and created_at < horizon:
            break
        if item.get("type") != import_type.value or item.get("origin", "api") != "api":
            continue
        if not same_options(item, options):
            continue
        total = item.get("total")
        if rows is not None and total is not None and int(total) != rows:
            continue
        if str(item.get("id")) in exclude:
            continue
        candidates.append(item)
    for item in sorted(candidates, key=lambda i: str(i.get("createdAt", ""))):
        if claim(str(item.get("id"))):
            return item
    return None


def import_duration(resource: dict[str, Any]) -> float | None:
    """Seconds Connectif took from starting (else creating) the import to finishing it, when it says."""
    end = resource.get("finishedAt") or resource.get("cancelledAt")
    start = resource.get("startedAt") or resource.get("createdAt")
    if not end or not start:
        return None
    begun, ended = parse_time(start), parse_time(end)
    if begun is None or ended is None:
        return None
    return round(ended - begun, 3)


class ImportReader(Protocol):
    """The two hook methods reconciliation needs (a Protocol: the hook imports this module)."""

    def get_import(self, import_id: str) -> dict[str, Any]: ...

    def find_created_import(
        self,
        import_type: ImportType,
        options: dict[str, Any],
        rows: int | None,
        *,
        since: float,
        exclude: Collection[str] = (),
    ) -> dict[str, Any] | None: ...


def _failed(resource: dict[str, Any]) -> ImportStatus | None:
    """The import's status when it ended ``error``/``cancelled`` (no use re-attaching), else None."""
    status = parse_import_status(resource.get("status"))
    return status if status in (ImportStatus.ERROR, ImportStatus.CANCELLED) else None


@dataclass
class ImportUpload:
    """One task's upload of one file: records its intent and finds the import an earlier upload made.

    ``store`` is ``context["task_state_store"]`` (None where the runtime has none); ``ledger`` an optional
    store of uploads that outlives runs (``record_upload``, ``earlier_upload``, ``claimed_imports``).
    """

    hook: ImportReader
    file_path: str
    import_type: ImportType
    options: dict[str, Any]
    delimiter: str
    store: Any
    ledger: Any
    state_key: str
    logger: logging.Logger | logging.LoggerAdapter[Any]

    # -- task_state_store ------------------------------------------------------------------------------
    def recall(self) -> Any:
        """What an earlier try of this task stored (None without a store)."""
        return self.store.get(self.state_key) if self.store is not None else None

    def remember(self, value: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.set(self.state_key, value)

    def record_intent(self) -> dict[str, Any]:
        """Before the upload, where a retry and a later run will look: should this process die before the
        upload's answer arrives, they find the import in the account's list instead of uploading again."""
        path = self.file_path
        rows = count_csv_rows(Path(path), self.delimiter) if Path(path).is_file() else None
        intent = {"file_path": path, "file": fingerprint(path), "upload_started": time.time(), "rows": rows}
        self.remember(intent)
        if self.ledger is not None:
            self.ledger.record_upload(path, started_at=intent["upload_started"], rows=rows)
        return intent

    def record_import(self, intent: dict[str, Any], import_id: str) -> None:
        """The upload's import id, as soon as it is known."""
        self.remember({**intent, "import_id": import_id})
        if self.ledger is not None:
            self.ledger.record_upload(
                self.file_path, started_at=intent["upload_started"], rows=intent["rows"], import_id=import_id
            )

    def forget_intent(self) -> None:
        """A definite "no" from Connectif: nothing to reconcile later."""
        self.remember({"file_path": self.file_path, "file": fingerprint(self.file_path)})

    # -- finding an earlier upload's import --------------------------------------------------------------
    def earlier_import(self) -> dict[str, Any] | None:
        """The import an earlier try or run made of this file, unless it failed or vanished."""
        return self._reattach() or self._reconcile()

    def _same_file(self, saved: Any) -> bool:
        """Whether ``saved`` (from task_state_store) is about this very file, unchanged since."""
        if not isinstance(saved, dict) or saved.get("file_path") != self.file_path:
            return False
        current = fingerprint(self.file_path)
        if current is not None and saved.get("file") not in (None, current):
            # The file was written again (the task was cleared with its upstream): its rows must be sent, not
            # the old import's summary returned.
            self.logger.info("%s changed since the earlier try; uploading it again", self.file_path)
            return False
        return True

    def _reattach(self) -> dict[str, Any] | None:
        """The import of an earlier try of this task for the same file, unless it failed or vanished."""
        saved = self.recall()
        if not self._same_file(saved) or not saved.get("import_id"):
            return None
        return self._usable(str(saved["import_id"]), "an earlier try")

    def _usable(self, import_id: str, whose: str) -> dict[str, Any] | None:
        """The import ``import_id`` unless it failed, was cancelled or no longer exists."""
        try:
            resource = self.hook.get_import(import_id)
        except ConnectifNotFoundError:
            self.logger.warning("Import %s of %s no longer exists; uploading again", import_id, whose)
            return None
        if (status := _failed(resource)) is not None:
            self.logger.warning("Import %s of %s ended %s; uploading again", import_id, whose, status.value)
            return None
        return resource

    def _same_kind(self, resource: dict[str, Any]) -> bool:
        """Whether an import has this task's type and options (those the resource shows)."""
        return resource.get("type") in (None, self.import_type.value) and same_options(resource, self.options)

    def _search(self, started: float, rows: int | None, whose: str) -> dict[str, Any] | None:
        """The account's import an upload started at ``started`` created (type, options, rows), if any."""
        exclude = self.ledger.claimed_imports() if self.ledger is not None else set()
        found = self.hook.find_created_import(self.import_type, self.options, rows, since=started, exclude=exclude)
        if found is None:
            self.logger.info("The upload of %s by %s created no import; uploading", self.file_path, whose)
            return None
        self.logger.info("The upload of %s by %s had created import %s", self.file_path, whose, found.get("id"))
        if (status := _failed(found)) is not None:
            self.logger.warning("Import %s ended %s; uploading again", found.get("id"), status.value)
            return None
        return found

    def _from_ledger(self) -> tuple[dict[str, Any] | None, float | None, int | None]:
        """An unconfirmed upload of the same content by an earlier run: its import, its start, its rows."""
        earlier = self.ledger.earlier_upload(self.file_path) if self.ledger is not None else None
        if earlier is None:
            return None, None, None
        started, rows = float(earlier["started_at"]), earlier.get("rows")
        whose = f"an earlier run ({earlier['path']})"
        if not earlier.get("import_id"):
            return self._search(started, rows, whose), started, rows
        found = self._usable(str(earlier["import_id"]), whose)
        if found is not None and not self._same_kind(found):
            found = None  # same bytes, other import (e.g. the same codes for another coupon set)
        return found, started, rows

    def _reconcile(self) -> dict[str, Any] | None:
        """Before uploading: the import an earlier upload of this file's content created, if there is one.

        * This task's earlier try recorded its intent but no import id (it died waiting for the upload's
          answer): the account's import list is searched for the import that upload created.
        * ``ledger`` knows an unconfirmed upload of the same content by an earlier run (its file was
          superseded by this run's identical one): re-attach to its import, or search the list as above.
        Whatever is found is recorded at once, like a fresh upload.
        """
        found: dict[str, Any] | None = None
        started: float | None = None
        rows: int | None = None
        saved = self.recall()
        if self._same_file(saved) and saved.get("upload_started") and not saved.get("import_id"):
            started, rows = float(saved["upload_started"]), saved.get("rows")
            found = self._search(started, rows, "an earlier try")
        if found is None and self.ledger is not None:
            found, started, rows = self._from_ledger()
        if found is None or started is None:
            return None
        intent = {"file_path": self.file_path, "file": fingerprint(self.file_path), "upload_started": started,
                  "rows": rows}  # fmt: skip
        self.record_import(intent, str(found["id"]))
        return found
