"""ConnectifHook: a typed client for the Connectif REST API, sync (workers) and async (triggers).

Every request to the API takes a token from the deployment's shared rate-limit bucket
(:mod:`connectif_provider.ratelimit`), is retried with tenacity on connection errors, timeouts, 5xx and
429 (honouring ``Retry-After``, else ``X-RateLimit-Reset``, else exponential backoff with jitter), and
turns error answers into the typed exceptions of :mod:`connectif_provider.exceptions`.

The client relies only on the [doc] points of the contract: it follows ``links.next`` verbatim, reads
``id``/``total`` of a created import, and treats every [assumed] shape defensively (a duplicate purchase
may come as 409 or as a 400 saying "already exists"; a 429 may lack ``Retry-After``).

Sync calls use httpx (streamed multipart uploads, ``httpx.MockTransport`` for unit tests); async calls use
aiohttp as the Airflow HTTP provider does. The HTTP provider's ``HttpHook`` itself is not used: it has
no notion of a shared bucket, typed API errors or an upload whose outcome must be reconciled, so it
would only add a layer to work around.
"""

from __future__ import annotations

import csv
import email.utils
import hashlib
import io
import json
import logging
import random
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import aiohttp
import httpx
from airflow.sdk.bases.hook import BaseHook
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from connectif_provider import metrics
from connectif_provider.exceptions import (
    CODE_ERRORS,
    STATUS_ERRORS,
    ConnectifConflictError,
    ConnectifError,
    ConnectifExportFailedError,
    ConnectifNotFoundError,
    ConnectifPayloadTooLargeError,
    ConnectifRateLimitedError,
    ConnectifServerError,
    ConnectifTransportError,
    ConnectifValidationError,
)
from connectif_provider.get_provider_info import CONN_FIELDS
from connectif_provider.get_provider_info import UI_FIELD_BEHAVIOUR as _UI
from connectif_provider.models import (
    DEFAULT_BASE_URL,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    MAX_FILE_BYTES,
    ExportStatus,
    ExportType,
    ImportType,
    RemoteStatus,
    parse_export_status,
    parse_import_status,
)
from connectif_provider.ratelimit import SharedRateLimiter, default_backend_url

log = logging.getLogger(__name__)

#: Extras of the connection and the UI form, declared once in the provider info.
EXTRA_FIELDS: dict[str, dict[str, Any]] = CONN_FIELDS
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": _UI["hidden-fields"],
    "relabeling": _UI["relabeling"],
    "placeholders": _UI["placeholders"],
}

_RETRY_DEADLINE_SECONDS = 900.0
#: How many times an export is read again for a fresh ``fileUrl`` when its link was refused as expired.
EXPIRED_URL_REFETCHES = 2
_UNKNOWN_OUTCOME_SKEW_SECONDS = 120.0
_claimed_import_ids: set[str] = set()
_claimed_lock = threading.Lock()


@dataclass(frozen=True)
class ConnectifSettings:
    """Everything a request needs, read from the Airflow connection. ``repr`` never shows the key."""

    base_url: str
    api_key: str = field(repr=False)
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE
    rate_limit_window_seconds: float = 60.0
    rate_limit_backend: str = field(default_factory=default_backend_url)
    rate_limit_bucket: str = ""
    timeout: float = 60.0
    max_attempts: int = 10

    @property
    def origin(self) -> tuple[str, str]:
        parts = urlsplit(self.base_url)
        return parts.scheme, parts.netloc

    def limiter(self) -> SharedRateLimiter:
        return SharedRateLimiter(
            self.rate_limit_backend, self.rate_limit_bucket, self.rate_limit_per_minute, self.rate_limit_window_seconds
        )


def settings_from_connection(conn: Any, extra: dict[str, Any]) -> ConnectifSettings:
    """Build settings from a Connection (host may carry a scheme; default https://api.connectif.cloud)."""
    # The UI may store form fields prefixed (``extra__connectif__<name>``); accept both spellings.
    prefix = "extra__connectif__"
    extra = {**{k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}, **extra}
    api_key = conn.password or extra.get("api_key")
    if not api_key:
        raise ValueError(
            f"Connection {conn.conn_id!r} has no API key: put it in the password field "
            "(JSON form: \"password\": \"keyId:keySecret\")."
        )
    host = (conn.host or "").strip()
    if not host:
        base_url = DEFAULT_BASE_URL
    else:
        if "://" not in host:
            host = f"{extra.get('scheme', 'https')}://{host}"
        parts = urlsplit(host)
        netloc = parts.netloc if (parts.port or not conn.port) else f"{parts.netloc}:{conn.port}"
        base_url = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    default_bucket = "connectif-" + hashlib.sha256(f"{base_url}|{api_key}".encode()).hexdigest()[:16]

    def _num(key: str, default: float) -> float:
        value = extra.get(key)
        if value in (None, ""):
            return default
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Connection {conn.conn_id!r}: extra {key!r} must be a number, got {value!r}") from exc

    return ConnectifSettings(
        base_url=base_url,
        api_key=str(api_key),
        rate_limit_per_minute=int(_num("rate_limit_per_minute", DEFAULT_RATE_LIMIT_PER_MINUTE)),
        rate_limit_window_seconds=_num("rate_limit_window_seconds", 60.0),
        rate_limit_backend=str(extra.get("rate_limit_backend") or default_backend_url()),
        rate_limit_bucket=str(extra.get("rate_limit_bucket") or default_bucket),
        timeout=_num("timeout", 60.0),
        max_attempts=int(_num("max_attempts", 10)),
    )


# -- response handling shared by the sync and async clients ----------------------------------------------
def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)


def _header_float(headers: Any, name: str) -> float | None:
    value = headers.get(name)
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


@dataclass
class _ServerHints:
    limited: bool
    retry_after: float | None
    remaining: int | None
    reset_at: float | None

    @classmethod
    def from_headers(cls, status: int, headers: Any) -> _ServerHints:
        remaining = _header_float(headers, "X-RateLimit-Remaining")
        reset_at = _header_float(headers, "X-RateLimit-Reset")
        return cls(
            limited=status == 429,
            retry_after=_parse_retry_after(headers.get("Retry-After")),
            remaining=int(remaining) if remaining is not None else None,
            reset_at=reset_at,
        )

    def wait_hint(self) -> float | None:
        if self.retry_after is not None:
            return self.retry_after
        if self.reset_at is not None:
            return max(self.reset_at - time.time(), 0.0)
        return None


def _safe_path(url: str) -> str:
    """The path of a URL without query (pre-signed signatures) for messages."""
    return urlsplit(url).path or "/"


def _error_from_response(
    status: int, headers: Any, text: str, method: str, url: str, hints: _ServerHints | None = None
) -> ConnectifError:
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(text) if text else {}
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    code = body.get("code")
    code = str(code) if code else None
    detail = body.get("detail") or body.get("title") or (text.strip()[:300] if not body else None) or "no detail"
    validation = body.get("validationErrors") if isinstance(body.get("validationErrors"), list) else []
    path = _safe_path(url)
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
        metrics.rate_limited()
        wait = hints.wait_hint() if hints else None
        return ConnectifRateLimitedError(message, retry_after=wait, **common)
    if status >= 500:
        return ConnectifServerError(message, **common)
    cls = (CODE_ERRORS.get(code) if code else None) or STATUS_ERRORS.get(status) or ConnectifError
    return cls(message, **common)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ConnectifRateLimitedError | ConnectifServerError | ConnectifTransportError)


def _wait_strategy(max_backoff: float) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=0.5, max=max_backoff)

    def _wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ConnectifRateLimitedError) and exc.retry_after is not None:
            return min(exc.retry_after, 3600.0) + random.uniform(0, 0.25)
        return float(backoff(state))

    return _wait


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0
    log.warning("Connectif request failed (attempt %d): %s; retrying in %.1f s", state.attempt_number, exc, wait)


def _retry_policy(settings: ConnectifSettings) -> dict[str, Any]:
    """Tenacity arguments shared by the sync (``Retrying``) and async (``AsyncRetrying``) clients."""
    return {
        "retry": retry_if_exception(_is_retryable),
        "wait": _wait_strategy(30.0),
        "stop": stop_after_attempt(settings.max_attempts) | stop_after_delay(_RETRY_DEADLINE_SECONDS),
        "before_sleep": _log_retry,
        "reraise": True,
    }


def _full_url(settings: ConnectifSettings, path_or_url: str) -> str:
    """An API path on the connection's base URL; an absolute URL (``links.next``, pre-signed files) as is."""
    if path_or_url.startswith(("http://", "https://")):
        return path_or_url
    return settings.base_url + path_or_url


def _decode_json(method: str, url: str, status: int, body: bytes) -> Any:
    """The decoded JSON body of an answer (None when empty); a body that is not JSON is an API error."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ConnectifError(
            f"Connectif {method} {_safe_path(url)} answered {status} with a body that is not JSON", status=status
        ) from exc


def _item_path(collection: str, item_id: str) -> str:
    """``/<collection>/<id>`` with the id escaped (ids and product ids may hold ``/`` or spaces)."""
    return f"{collection}/{quote(item_id, safe='')}"


def _is_expired_link(err: ConnectifError) -> bool:
    """A pre-signed link refused because it expired: 403 (S3, Azure, the emulator), or a 400 saying so (GCS)."""
    return err.status == 403 or (err.status == 400 and "expired" in f"{err.detail} {err.body}".lower())


def _is_duplicate_purchase(err: ConnectifError) -> bool:
    if isinstance(err, ConnectifConflictError):
        return True
    text = f"{err.detail or ''} {err.body.get('title', '')}".lower()
    return err.status in (400, 409, 422) and ("already exist" in text or "duplicate" in text)


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def count_csv_rows(path: Path, delimiter: str) -> int | None:
    """Data rows of a CSV (quoted newlines count once), as Connectif reports ``total``; None if unreadable."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            next(reader, None)
            return sum(1 for row in reader if row)
    except (UnicodeDecodeError, csv.Error):
        return None


_REPORT_COLUMNS = {
    "line": ("line", "row", "linenumber", "line_number", "rownumber"),
    "field": ("field", "column", "fieldid", "field_id"),
    "error": ("error", "reason", "message", "detail"),
}


def parse_error_report(text: str) -> list[dict[str, Any]]:
    """
    The import error report as ``{"line", "field", "error"}`` dicts, ``line`` an int when numeric.

    The columns are [assumed] to be ``line,field,error``; common synonyms (row/column/reason/message) are
    accepted, and a header naming none of them is read by position, so a changed header loses nothing.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower().replace(" ", "") for h in next(reader, [])]
    index: dict[str, int] = {}
    for key, names in _REPORT_COLUMNS.items():
        for pos, name in enumerate(header):
            if name in names:
                index[key] = pos
                break
    if len(index) < 3:
        index = {"line": 0, "field": 1, "error": 2}
    rows: list[dict[str, Any]] = []
    for rec in reader:
        if not any(cell.strip() for cell in rec):
            continue

        def cell(key: str, rec: list[str] = rec) -> str:
            pos = index[key]
            return rec[pos].strip() if pos < len(rec) else ""

        raw_line = cell("line")
        line: int | str = int(raw_line) if raw_line.isdigit() else raw_line
        rows.append({"line": line, "field": cell("field"), "error": cell("error")})
    return rows


def _safe_extract_csvs(zip_path: Path, target_dir: Path) -> list[Path]:
    """Unpack the CSV members of an export ZIP into ``target_dir`` (no path escapes)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ConnectifExportFailedError(f"The export file is not a ZIP archive: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.lower().endswith(".csv"):
                continue
            out = target_dir / Path(info.filename).name
            with archive.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            paths.append(out)
    if not paths:
        raise ConnectifExportFailedError(f"The export ZIP {zip_path.name} holds no CSV file")
    return sorted(paths)


class ConnectifHook(BaseHook):
    """
    Talk to the Connectif API through an Airflow connection of type ``connectif``.

    :param connectif_conn_id: the connection (host = API base URL, password = API key, extras = rate limit).
    """

    conn_name_attr = "connectif_conn_id"
    default_conn_name = "connectif_default"
    conn_type = "connectif"
    hook_name = "Connectif"

    #: Request budget spent per call path, for the benchmark; never part of the job state.
    request_counter: ClassVar[dict[str, int]] = {}

    def __init__(self, connectif_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connectif_conn_id = connectif_conn_id
        self._settings: ConnectifSettings | None = None
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"ConnectifHook(connectif_conn_id={self.connectif_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form: host and API key (password) only; the extras come from provider info."""
        return UI_FIELD_BEHAVIOUR

    # -- settings -----------------------------------------------------------------------------------------
    def get_settings(self) -> ConnectifSettings:
        if self._settings is None:
            conn = self.get_connection(self.connectif_conn_id)
            settings = settings_from_connection(conn, conn.extra_dejson)
            try:
                from airflow.sdk.log import mask_secret

                mask_secret(settings.api_key)
            except Exception:  # masking is best effort outside a task
                log.debug("could not register the API key with the secrets masker")
            self._settings = settings
        return self._settings

    async def aget_settings(self) -> ConnectifSettings:
        if self._settings is None:
            conn = await self.aget_connection(self.connectif_conn_id)
            extra = await conn.aextra_dejson()
            settings = settings_from_connection(conn, extra)
            try:
                from airflow.sdk.log import amask_secret

                await amask_secret(settings.api_key)
            except Exception:
                log.debug("could not register the API key with the secrets masker")
            self._settings = settings
        return self._settings

    def get_conn(self) -> httpx.Client:
        """The httpx client (no auth header here: it is added per request, only for the API's origin)."""
        if self._client is None:
            settings = self.get_settings()
            self._client = httpx.Client(timeout=httpx.Timeout(settings.timeout, connect=min(settings.timeout, 15.0)))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's Test button: one cheap authenticated GET."""
        try:
            self._request("GET", "/imports", params={"limit": 1})
        except ConnectifError as exc:
            return False, str(exc)
        return True, "Connection to Connectif works"

    # -- low level: sync ----------------------------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        return _full_url(self.get_settings(), path_or_url)

    def _is_api_origin(self, url: str, settings: ConnectifSettings) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == settings.origin

    def _count(self, method: str, url: str) -> None:
        key = f"{method} {_safe_path(url)}"
        ConnectifHook.request_counter[key] = ConnectifHook.request_counter.get(key, 0) + 1
        metrics.api_request(method)

    def _send_once(
        self,
        method: str,
        url: str,
        *,
        with_key: bool = True,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        settings = self.get_settings()
        limiter = settings.limiter() if self._is_api_origin(url, settings) else None
        if limiter is not None:
            metrics.rate_limit_wait(limiter.acquire())
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Accept", "application/json")
        if with_key:
            headers["Authorization"] = f"apiKey {settings.api_key}"
        self._count(method, url)
        client = self.get_conn()
        try:
            response = client.request(
                method, url, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
            )
        except httpx.ConnectError as exc:
            raise ConnectifTransportError(
                f"Connectif {method} {_safe_path(url)}: could not connect ({type(exc).__name__})", method=method
            ) from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            err = ConnectifTransportError(
                f"Connectif {method} {_safe_path(url)}: connection failed or dropped ({type(exc).__name__}); "
                "the request may or may not have been processed",
                method=method,
                path=_safe_path(url),
            )
            err.body = {"outcome_unknown": True}
            raise err from None
        if limiter is not None:
            hints = _ServerHints.from_headers(response.status_code, response.headers)
            limiter.record_server_state(
                limited=hints.limited, retry_after=hints.retry_after, remaining=hints.remaining, reset_at=hints.reset_at
            )
        else:
            hints = None
        if response.status_code >= 400:
            raise _error_from_response(response.status_code, response.headers, response.text, method, url, hints)
        return response

    def _retrying(self) -> Retrying:
        return Retrying(**_retry_policy(self.get_settings()))

    def _request(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """An idempotent request with retries; returns the decoded JSON body (None when empty)."""
        url = self._url(path_or_url)
        for attempt in self._retrying():
            with attempt:
                response = self._send_once(method, url, **kwargs)
        return _decode_json(method, url, response.status_code, response.content)

    def _paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Items of a list endpoint, following ``links.next`` verbatim."""
        url: str | None = self._url(path)
        first = True
        while url:
            page = self._request("GET", url, params=params if first else None) or {}
            first = False
            yield from page.get("results") or []
            url = (page.get("links") or {}).get("next")

    # -- low level: async ---------------------------------------------------------------------------------
    async def _asend_once(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        settings = await self.aget_settings()
        limiter = settings.limiter() if self._is_api_origin(url, settings) else None
        if limiter is not None:
            metrics.rate_limit_wait(await limiter.aacquire())
        headers = {"Accept": "application/json", "Authorization": f"apiKey {settings.api_key}"}
        self._count(method, url)
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, url, headers=headers, **kwargs) as response,
            ):
                status = response.status
                resp_headers = response.headers
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ConnectifTransportError(
                f"Connectif {method} {_safe_path(url)}: connection failed or dropped ({type(exc).__name__})",
                method=method,
                path=_safe_path(url),
            ) from None
        hints = _ServerHints.from_headers(status, resp_headers)
        if limiter is not None:
            await limiter.arecord_server_state(
                limited=hints.limited, retry_after=hints.retry_after, remaining=hints.remaining, reset_at=hints.reset_at
            )
        if status >= 400:
            raise _error_from_response(status, resp_headers, body.decode("utf-8", "replace"), method, url, hints)
        return status, resp_headers, body

    async def _arequest(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        settings = await self.aget_settings()
        url = _full_url(settings, path_or_url)
        async for attempt in AsyncRetrying(**_retry_policy(settings)):
            with attempt:
                status, _headers, body = await self._asend_once(method, url, **kwargs)
        return _decode_json(method, url, status, body)

    async def _apaginate(self, path: str, params: dict[str, Any] | None = None, max_pages: int = 20) -> list[Any]:
        settings = await self.aget_settings()
        url: str | None = settings.base_url + path
        items: list[Any] = []
        first = True
        pages = 0
        while url and pages < max_pages:
            page = await self._arequest("GET", url, params=params if first else None) or {}
            first = False
            pages += 1
            items.extend(page.get("results") or [])
            url = (page.get("links") or {}).get("next")
        return items

    # -- shared shapes of the resource methods -------------------------------------------------------------
    def _get_item(self, collection: str, item_id: str) -> dict[str, Any]:
        return dict(self._request("GET", _item_path(collection, item_id)))

    async def _aget_item(self, collection: str, item_id: str) -> dict[str, Any]:
        return dict(await self._arequest("GET", _item_path(collection, item_id)))

    def _get_or_none(self, path: str) -> dict[str, Any] | None:
        """GET an entity; None when Connectif does not know it (404)."""
        try:
            return dict(self._request("GET", path))
        except ConnectifNotFoundError:
            return None

    def _delete_if_exists(self, path: str) -> bool:
        """DELETE an entity; False when it did not exist (404), which callers count as done."""
        try:
            self._request("DELETE", path)
        except ConnectifNotFoundError:
            return False
        return True

    def _count_active_in(self, collection: str, parse: Callable[[object], RemoteStatus]) -> int:
        return _count_active(self._paginate(collection, params={"limit": 100}), parse)

    async def _acount_active_in(self, collection: str, parse: Callable[[object], RemoteStatus]) -> int:
        items = await self._apaginate(collection, params={"limit": 100}, max_pages=5)
        return _count_active(iter(items), parse)

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
        """
        path = Path(file_path)
        kind = ImportType(str(import_type))
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
        rows = count_csv_rows(path, delimiter)
        started = time.time()
        url = self._url("/imports")
        outcome_unknown = False
        for attempt in self._retrying():
            with attempt:
                if outcome_unknown:
                    found = self.find_created_import(kind, options, rows, since=started)
                    if found is not None:
                        log.info("Reconciled an upload of unknown outcome with import %s", found.get("id"))
                        return found
                try:
                    with path.open("rb") as fh:
                        response = self._send_once(
                            "POST",
                            url,
                            data=form,
                            files={"file": (path.name, fh, "text/csv")},
                            timeout=max(self.get_settings().timeout, 300.0),
                        )
                except ConnectifTransportError as exc:
                    outcome_unknown = outcome_unknown or bool(exc.body.get("outcome_unknown"))
                    raise
                except ConnectifServerError:
                    outcome_unknown = True
                    raise
                created: dict[str, Any] = response.json()
                self._claim(str(created.get("id")))
                return created
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    @staticmethod
    def _claim(import_id: str) -> bool:
        with _claimed_lock:
            if import_id in _claimed_import_ids:
                return False
            _claimed_import_ids.add(import_id)
            return True

    def find_created_import(
        self,
        import_type: ImportType,
        options: dict[str, Any],
        rows: int | None,
        *,
        since: float,
        exclude: Collection[str] = (),
    ) -> dict[str, Any] | None:
        """The import (oldest first) that matches an upload started at ``since``, not yet claimed by this
        process nor in ``exclude`` (ids other uploads are known to own)."""
        horizon = since - _UNKNOWN_OUTCOME_SKEW_SECONDS
        candidates: list[dict[str, Any]] = []
        for item in self._paginate("/imports", params={"limit": 100}):
            created_at = _parse_time(item.get("createdAt"))
            if created_at is not None and created_at < horizon:
                break
            if item.get("type") != import_type.value or item.get("origin", "api") != "api":
                continue
            opts = item.get("options") or {}
            if any(str(opts.get(k)).lower() != str(v).lower() for k, v in options.items() if k in opts):
                continue
            total = item.get("total")
            if rows is not None and total is not None and int(total) != rows:
                continue
            if str(item.get("id")) in exclude:
                continue
            candidates.append(item)
        for item in sorted(candidates, key=lambda i: str(i.get("createdAt", ""))):
            if self._claim(str(item.get("id"))):
                return item
        return None

    def get_import(self, import_id: str) -> dict[str, Any]:
        return self._get_item("/imports", import_id)

    def list_imports(self, **params: Any) -> Iterator[dict[str, Any]]:
        return self._paginate("/imports", params=params or None)

    def delete_import(self, import_id: str) -> None:
        self._request("DELETE", _item_path("/imports", import_id))

    def count_active_imports(self) -> int:
        """Imports queued or in progress (both count towards the account's 10)."""
        return self._count_active_in("/imports", parse_import_status)

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
                if import_id is None or refetch == EXPIRED_URL_REFETCHES or not _is_expired_link(exc):
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

    def _download_text(self, url: str) -> str:
        settings = self.get_settings()
        full = self._url(url)
        for attempt in self._retrying():
            with attempt:
                try:
                    response = self._send_once("GET", full, with_key=False)
                except ConnectifError as exc:
                    if not (exc.status in (401, 403) and self._is_api_origin(full, settings)):
                        raise
                    try:
                        response = self._send_once("GET", full, with_key=True)
                    except ConnectifError as keyed:
                        # A pre-signed link refuses a second auth mechanism (400): the keyless answer
                        # (e.g. 403 expired) is the one that says what is wrong.
                        if keyed.status == 400:
                            raise exc from keyed
                        raise
        return response.content.decode("utf-8-sig", "replace")

    async def aget_import(self, import_id: str) -> dict[str, Any]:
        return await self._aget_item("/imports", import_id)

    async def acount_active_imports(self) -> int:
        return await self._acount_active_in("/imports", parse_import_status)

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
        """Create one export (the caller splits ranges over 31 days; see ``split_date_range``)."""
        kind = ExportType(str(export_type))
        if kind is ExportType.DATA_EXPLORER:
            if not (report_id and from_date and to_date):
                raise ValueError("a data-explorer export needs report_id, from_date and to_date (YYYY-MM-DD)")
            body: dict[str, Any] = {
                "delimiter": delimiter,
                "filters": {"reportId": report_id, "fromDate": from_date[:10], "toDate": to_date[:10]},
            }
            return dict(self._request("POST", "/exports/type/data-explorer", json=body))
        filters: dict[str, Any] = {}
        if segment_id:
            filters["segmentId"] = segment_id
        if kind is ExportType.ACTIVITIES:
            if not (from_date and to_date):
                raise ValueError("an activities export needs from_date and to_date (at most 31 days apart)")
            if activity_types:
                filters["activityTypes"] = list(activity_types)
        if from_date:
            filters["fromDate"] = from_date
        if to_date:
            filters["toDate"] = to_date
        body = {
            "exportType": kind.value,
            "delimiter": delimiter,
            "dateFormat": date_format,
            "filters": filters,
            "version": "v1",
        }
        return dict(self._request("POST", "/exports", json=body))

    def get_export(self, export_id: str) -> dict[str, Any]:
        return self._get_item("/exports", export_id)

    def list_exports(self, **params: Any) -> Iterator[dict[str, Any]]:
        return self._paginate("/exports", params=params or None)

    def delete_export(self, export_id: str) -> None:
        self._request("DELETE", _item_path("/exports", export_id))

    def count_active_exports(self) -> int:
        return self._count_active_in("/exports", parse_export_status)

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
                    if refetch == EXPIRED_URL_REFETCHES or not _is_expired_link(exc):
                        raise
                    log.warning(
                        "The download link of export %s was refused (%s); reading the export again for a fresh one",
                        export_id,
                        exc.detail,
                    )
            return _safe_extract_csvs(zip_path, Path(target_dir))

    def _export_file_url(self, export_id: str) -> str:
        """A fresh pre-signed ``fileUrl`` of a finished export (each GET mints a new one)."""
        export = self.get_export(export_id)
        status = parse_export_status(export.get("status"))
        if status is not ExportStatus.FINISHED or not export.get("fileUrl"):
            raise ConnectifExportFailedError(
                f"Export {export_id} is {status.value}, not finished with a file; nothing to download"
            )
        return self._url(str(export["fileUrl"]))

    def _stream_to(self, url: str, dest: Path) -> None:
        settings = self.get_settings()
        limiter = settings.limiter() if self._is_api_origin(url, settings) else None
        if limiter is not None:
            metrics.rate_limit_wait(limiter.acquire())
        self._count("GET", url)
        try:
            with self.get_conn().stream("GET", url, timeout=max(settings.timeout, 300.0)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from_response(response.status_code, response.headers, response.text, "GET", url)
                with dest.open("wb") as fh:
                    for chunk in response.iter_bytes(1024 * 1024):
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise ConnectifTransportError(
                f"Connectif GET {_safe_path(url)}: download failed ({type(exc).__name__})", method="GET"
            ) from None

    async def aget_export(self, export_id: str) -> dict[str, Any]:
        return await self._aget_item("/exports", export_id)

    async def acount_active_exports(self) -> int:
        return await self._acount_active_in("/exports", parse_export_status)

    # -- contacts -------------------------------------------------------------------------------------------
    def get_contact(self, email_address: str) -> dict[str, Any] | None:
        """The contact, or None if it does not exist."""
        return self._get_or_none(f"/contacts/{_email_path(email_address)}")

    def upsert_contact(self, email_address: str, fields: dict[str, Any]) -> dict[str, Any]:
        """PATCH a contact by email; Connectif creates it when absent."""
        return dict(self._request("PATCH", f"/contacts/{_email_path(email_address)}", json=fields) or {})

    def delete_contact(self, email_address: str) -> bool:
        """Delete a contact; False when it did not exist (which counts as done for an erasure)."""
        return self._delete_if_exists(f"/contacts/email/{_email_path(email_address)}")

    # -- products -------------------------------------------------------------------------------------------
    def upsert_product(self, product_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("PATCH", _item_path("/products/product-id", product_id), json=fields) or {})

    def get_product(self, product_id: str) -> dict[str, Any] | None:
        return self._get_or_none(_item_path("/products/product-id", product_id))

    def delete_product(self, product_id: str) -> bool:
        return self._delete_if_exists(_item_path("/products/product-id", product_id))

    # -- purchases ------------------------------------------------------------------------------------------
    def create_purchase(self, purchase: dict[str, Any], *, trigger_purchase_event: bool = False) -> dict[str, Any]:
        """
        Create a purchase. Idempotent by ``purchaseId``: a duplicate (409, or a 4xx saying it already
        exists) is success, returned as ``{"purchaseId": ..., "duplicate": True}``. E0101/E0102/E0103 raise.
        """
        if not purchase.get("purchaseId"):
            raise ValueError("a purchase needs a purchaseId (it makes replays idempotent)")
        params = {"triggerPurchaseEvent": "true" if trigger_purchase_event else "false"}
        try:
            created = self._request("POST", "/purchases", params=params, json=purchase) or {}
        except ConnectifError as exc:
            if _is_duplicate_purchase(exc):
                return {"purchaseId": purchase["purchaseId"], "duplicate": True}
            raise
        return {**dict(created), "duplicate": False}

    def get_purchase(self, purchase_id: str) -> dict[str, Any] | None:
        return self._get_or_none(_item_path("/purchases/purchase-id", purchase_id))

    def delete_purchase(self, purchase_id: str) -> bool:
        return self._delete_if_exists(_item_path("/purchases/purchase-id", purchase_id))

    # -- coupon sets and workflows -----------------------------------------------------------------------
    def list_coupon_sets(self) -> Iterator[dict[str, Any]]:
        return self._paginate("/coupon-sets")

    def get_coupon_set(self, coupon_set_id: str) -> dict[str, Any]:
        return self._get_item("/coupon-sets", coupon_set_id)

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return self._get_item("/workflows", workflow_id)


def _email_path(email_address: str) -> str:
    value = email_address.strip()
    if not value or "@" not in value:
        raise ConnectifValidationError(f"{email_address!r} is not an email address")
    return quote(value, safe="@")


def _count_active(items: Iterator[dict[str, Any]], parse: Callable[[object], RemoteStatus]) -> int:
    """Count active items; since Connectif processes in creation order, stop at the first terminal page."""
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
            if seen_terminal >= 100:
                break
    return active
