"""Remote states and kinds of the Connectif API, as Enums (values are the API's own strings)."""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class RemoteStatus(StrEnum):
    """
    What import and export states have in common (members are declared by the subclasses).

    Both resources spell ``queued``, ``inProgress`` and ``finished`` alike; any other terminal state is a
    failure. Defining the predicates once keeps the triggers and operators free of per-Enum member lists.
    """

    @property
    def is_active(self) -> bool:
        """Queued or in progress: it counts towards the account's queue limit."""
        return self.value in ("queued", "inProgress")

    @property
    def is_running(self) -> bool:
        return self.value == "inProgress"

    @property
    def is_finished(self) -> bool:
        return self.value == "finished"

    @property
    def is_terminal(self) -> bool:
        return not self.is_active

    @property
    def is_failed(self) -> bool:
        """Terminal but not finished (``error``, or ``cancelled`` for imports)."""
        return self.is_terminal and not self.is_finished

    @classmethod
    def parse(cls, value: object) -> Self:
        """Map the API's status string to the Enum; an unknown value is an error worth seeing, not a guess."""
        try:
            return cls(str(value))
        except ValueError as exc:
            noun = cls.__name__.removesuffix("Status").lower()
            raise ValueError(f"Connectif returned an unknown {noun} status {value!r}") from exc


class ImportStatus(RemoteStatus):
    QUEUED = "queued"
    IN_PROGRESS = "inProgress"
    FINISHED = "finished"
    ERROR = "error"
    CANCELLED = "cancelled"


class ExportStatus(RemoteStatus):
    QUEUED = "queued"
    IN_PROGRESS = "inProgress"
    FINISHED = "finished"
    ERROR = "error"


class ImportType(StrEnum):
    CONTACTS = "contacts"
    PRODUCTS = "products"
    COUPONS = "coupons"


class ExportType(StrEnum):
    CONTACTS = "contacts"
    ACTIVITIES = "activities"
    DATA_EXPLORER = "data-explorer"


# -- the API's limits: the one copy (docs/contract: /work/shared/connectif-api.md) --------------------------
#: Requests per account and minute Connectif allows; more are answered 429.
ACCOUNT_RATE_LIMIT_PER_MINUTE = 100
#: The deployment's shared bucket by default: below the account's limit, leaving headroom for the account's
#: other users (the Connectif app, other integrations). A connection's ``rate_limit_per_minute`` overrides it.
DEFAULT_RATE_LIMIT_PER_MINUTE = 90
#: Imports (exports) queued or in progress per account; one more is refused with E0401 (E0301).
MAX_QUEUED_IMPORTS = 10
MAX_QUEUED_EXPORTS = 5
#: Days one activities / data-explorer export may span.
MAX_EXPORT_RANGE_DAYS = 31
#: "50 MB" read as 50,000,000 bytes: below it whichever way Connectif counts a megabyte.
MAX_FILE_BYTES = 50_000_000
DEFAULT_BASE_URL = "https://api.connectif.cloud"


class EventStatus(StrEnum):
    """How a wait ended: the ``status`` of every trigger event and of the hook's waits.

    Events carry the plain string (``.value``): trigger payloads are serialised, and old tasks compare text.
    """

    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"


class JobKind(StrEnum):
    """The two kinds of queued work (values: the API's collection names, also the trigger events' keys).

    One job trigger, one wait in the hook and one queue-slot wait serve both; what differs is declared here.
    """

    IMPORTS = "imports"
    EXPORTS = "exports"

    @property
    def noun(self) -> str:
        """``Import`` / ``Export``, for messages."""
        return self.value[:-1].capitalize()

    @property
    def status_enum(self) -> type[RemoteStatus]:
        return ImportStatus if self is JobKind.IMPORTS else ExportStatus

    @property
    def max_queued(self) -> int:
        """The account's queue size for this kind."""
        return MAX_QUEUED_IMPORTS if self is JobKind.IMPORTS else MAX_QUEUED_EXPORTS

    @property
    def queue_full_code(self) -> str:
        """The error code Connectif answers when that queue is full."""
        return "E0401" if self is JobKind.IMPORTS else "E0301"


def parse_import_status(value: object) -> ImportStatus:
    return ImportStatus.parse(value)


def parse_export_status(value: object) -> ExportStatus:
    return ExportStatus.parse(value)
