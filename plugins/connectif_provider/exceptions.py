"""Typed errors of the Connectif API, so that callers branch on a class instead of parsing bodies.

Messages never contain the API key: they are built only from the HTTP status, the error body and the
request path (never the headers).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

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


def safe_path(url: str) -> str:
    """The path of a URL without its query (pre-signed signatures), for messages."""
    return urlsplit(url).path or "/"


def error_from_response(
    status: int, text: str, method: str, url: str, *, retry_after: float | None = None
) -> ConnectifError:
    """The typed error of an error answer: by Connectif's ``code`` first, else by HTTP status.

    The message names method, path (no query), status, code, detail and up to ten validation errors: what a
    user needs to fix the request, and never a header (the API key travels in one).
    """
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(text) if text else {}
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    code = str(body["code"]) if body.get("code") else None
    detail = body.get("detail") or body.get("title") or (text.strip()[:300] if not body else None) or "no detail"
    validation = body.get("validationErrors") if isinstance(body.get("validationErrors"), list) else []
    path = safe_path(url)
    message = f"Connectif {method} {path} answered {status}{' ' + code if code else ''}: {detail}"
    if validation:
        reasons = "; ".join(f"{v.get('path')}: {v.get('reason')}" for v in validation[:10] if isinstance(v, dict))
        message += f" ({reasons})"
    common: dict[str, Any] = {
        "status": status,
        "code": code,
        "detail": str(detail),
        "validation_errors": validation,
        "body": body,
        "method": method,
        "path": path,
    }
    if status == 429:
        return ConnectifRateLimitedError(message, retry_after=retry_after, **common)
    if status >= 500:
        return ConnectifServerError(message, **common)
    cls = (CODE_ERRORS.get(code) if code else None) or STATUS_ERRORS.get(status) or ConnectifError
    return cls(message, **common)


def is_retryable(exc: BaseException) -> bool:
    """Worth another attempt: a 429, a 5xx or a failed connection."""
    return isinstance(exc, ConnectifRateLimitedError | ConnectifServerError | ConnectifTransportError)


def is_expired_link(err: ConnectifError) -> bool:
    """A pre-signed link refused because it expired: 403 (S3, Azure, the emulator), or a 400 saying so (GCS)."""
    return err.status == 403 or (err.status == 400 and "expired" in f"{err.detail} {err.body}".lower())


def is_duplicate_purchase(err: ConnectifError) -> bool:
    """A purchase id Connectif already has: 409, or [assumed] a 4xx whose text says it already exists."""
    if isinstance(err, ConnectifConflictError):
        return True
    text = f"{err.detail or ''} {err.body.get('title', '')}".lower()
    return err.status in (400, 409, 422) and ("already exist" in text or "duplicate" in text)
