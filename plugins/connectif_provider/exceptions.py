"""Typed errors of the Connectif API, so that callers branch on a class instead of parsing bodies.

Messages never contain the API key: they are built only from the HTTP status, the error body and the
request path (never the headers).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException


class ConnectifError(Exception):
    """An error answer (or an unusable answer) of the Connectif API."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
        validation_errors: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail
        self.validation_errors = validation_errors or []
        self.body = body or {}
        self.method = method
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the typed fields when the error crosses a process boundary (pickling in executors).
        return (_rebuild, (type(self), self.args[0] if self.args else "", self.__dict__))


def _rebuild(cls: type[ConnectifError], message: str, state: dict[str, Any]) -> ConnectifError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class ConnectifAuthenticationError(ConnectifError):
    """401: the API key is missing, malformed or unknown."""


class ConnectifPermissionError(ConnectifError):
    """403: the key lacks the needed scope, or the account is blocked."""


class ConnectifNotFoundError(ConnectifError):
    """404: unknown id (or another account's)."""


class ConnectifConflictError(ConnectifError):
    """409: e.g. deleting an import still queued, or a duplicate purchase id."""


class ConnectifValidationError(ConnectifError):
    """422 (``validationErrors`` lists path and reason) or a 400 without a known code."""


class ConnectifPayloadTooLargeError(ConnectifError):
    """413: a file over 50 MB."""


class ConnectifUnsupportedMediaTypeError(ConnectifError):
    """415: the body is not of the type the endpoint takes."""


class ConnectifQueueFullError(ConnectifError):
    """400 E0401 (10 queued imports) or E0301 (5 queued exports): wait for a slot, then try again."""


class ConnectifImportQueueFullError(ConnectifQueueFullError):
    """400 E0401."""


class ConnectifExportQueueFullError(ConnectifQueueFullError):
    """400 E0301."""


class ConnectifMissingContactError(ConnectifError):
    """400 E0101: a purchase names a contact that does not exist."""


class ConnectifMissingProductError(ConnectifError):
    """400 E0102: a purchase names products that are not in the catalog (``product_ids``)."""

    @property
    def product_ids(self) -> list[str]:
        ids = self.body.get("productIds") or []
        return [str(i) for i in ids] if isinstance(ids, list) else [str(ids)]


class ConnectifUnauthorizedDomainError(ConnectifError):
    """400 E0103 / E0201: a URL outside the account's authorised domains."""


class ConnectifRateLimitedError(ConnectifError):
    """429: too many requests. ``retry_after`` (seconds) comes from ``Retry-After`` or ``X-RateLimit-Reset``."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ConnectifServerError(ConnectifError):
    """5xx: transient on Connectif's side; retried."""


class ConnectifTransportError(ConnectifError):
    """The connection failed, dropped or timed out; the outcome of the request may be unknown."""


class ConnectifImportFailedError(ConnectifError):
    """An import ended in ``error`` or ``cancelled``, or could not be followed."""


class ConnectifExportFailedError(ConnectifError):
    """An export ended in ``error`` or could not be downloaded."""


class ConnectifTimeoutError(ConnectifError):
    """An import or export did not finish before the task's deadline."""


class ConnectifRowErrorsExceededError(ConnectifError, AirflowFailException):
    """An import finished with more row errors than the task allows (no retry: the same file fails again)."""


CODE_ERRORS: dict[str, type[ConnectifError]] = {
    "E0101": ConnectifMissingContactError,
    "E0102": ConnectifMissingProductError,
    "E0103": ConnectifUnauthorizedDomainError,
    "E0201": ConnectifUnauthorizedDomainError,
    "E0301": ConnectifExportQueueFullError,
    "E0401": ConnectifImportQueueFullError,
}

STATUS_ERRORS: dict[int, type[ConnectifError]] = {
    401: ConnectifAuthenticationError,
    403: ConnectifPermissionError,
    404: ConnectifNotFoundError,
    409: ConnectifConflictError,
    413: ConnectifPayloadTooLargeError,
    415: ConnectifUnsupportedMediaTypeError,
    422: ConnectifValidationError,
    400: ConnectifValidationError,
}
