"""Remote states and kinds of the Connectif API, as Enums (values are the API's own strings)."""

from __future__ import annotations

from enum import StrEnum


class ImportStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "inProgress"
    FINISHED = "finished"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in (ImportStatus.QUEUED, ImportStatus.IN_PROGRESS)

    @property
    def is_terminal(self) -> bool:
        return not self.is_active


class ExportStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "inProgress"
    FINISHED = "finished"
    ERROR = "error"

    @property
    def is_active(self) -> bool:
        return self in (ExportStatus.QUEUED, ExportStatus.IN_PROGRESS)


class ImportType(StrEnum):
    CONTACTS = "contacts"
    PRODUCTS = "products"
    COUPONS = "coupons"


class ExportType(StrEnum):
    CONTACTS = "contacts"
    ACTIVITIES = "activities"
    DATA_EXPLORER = "data-explorer"


#: Account limits stated by the contract.
MAX_QUEUED_IMPORTS = 10
MAX_QUEUED_EXPORTS = 5
MAX_EXPORT_RANGE_DAYS = 31
#: "50 MB" read as 50,000,000 bytes: below it whichever way Connectif counts a megabyte.
MAX_FILE_BYTES = 50_000_000
DEFAULT_BASE_URL = "https://api.connectif.cloud"
DEFAULT_RATE_LIMIT_PER_MINUTE = 90


def parse_import_status(value: object) -> ImportStatus:
    """Map the API's status string to the Enum; an unknown value is an error worth seeing, not a guess."""
    try:
        return ImportStatus(str(value))
    except ValueError as exc:
        raise ValueError(f"Connectif returned an unknown import status {value!r}") from exc


def parse_export_status(value: object) -> ExportStatus:
    try:
        return ExportStatus(str(value))
    except ValueError as exc:
        raise ValueError(f"Connectif returned an unknown export status {value!r}") from exc
