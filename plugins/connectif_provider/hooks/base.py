"""Transport of the Connectif client: settings, the shared rate-limit bucket, retries, sync/async HTTP, paging.

Every request to the API takes a token from the deployment's shared rate-limit bucket
(:mod:`connectif_provider.ratelimit`), is retried with tenacity on connection errors, timeouts, 5xx and
429 (honouring ``Retry-After``, else ``X-RateLimit-Reset``, else exponential backoff with jitter), and
turns error answers into the typed exceptions of :mod:`connectif_provider.exceptions`. Nothing here knows
an endpoint: :class:`~connectif_provider.hooks.connectif.ConnectifHook` declares those.

Sync calls use httpx (streamed multipart uploads, ``httpx.MockTransport`` for unit tests); async calls use
aiohttp as the Airflow HTTP provider does. The HTTP provider's ``HttpHook`` itself is not used: it has
no notion of a shared bucket, typed API errors or an upload whose outcome must be reconciled, so it
would only add a layer to work around.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    ConnectifError,
    ConnectifNotFoundError,
    ConnectifRateLimitedError,
    ConnectifTransportError,
    error_from_response,
    is_retryable,
    safe_path,
)
from connectif_provider.get_provider_info import UI_FIELD_BEHAVIOUR as _UI
from connectif_provider.models import DEFAULT_BASE_URL, DEFAULT_RATE_LIMIT_PER_MINUTE
from connectif_provider.ratelimit import SharedRateLimiter, default_backend_url

log = logging.getLogger(__name__)

#: Extras of the connection and the UI form, declared once in the provider info.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": _UI["hidden-fields"],
    "relabeling": _UI["relabeling"],
    "placeholders": _UI["placeholders"],
}

#: No request is retried for longer than this, whatever ``max_attempts`` allows.
RETRY_DEADLINE_SECONDS = 900.0
#: Uploads and downloads get at least this long (a 50 MB file on a slow link).
FILE_TIMEOUT_SECONDS = 300.0

#: An endpoint: ``(METHOD, path)``, the path with ``{placeholders}`` for ids.
Endpoint = tuple[str, str]


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

    def is_api_origin(self, url: str) -> bool:
        """Whether ``url`` is the API (takes a token and the key) rather than pre-signed file storage."""
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == self.origin

    def url(self, path_or_url: str) -> str:
        """An API path on the base URL; an absolute URL (``links.next``, pre-signed files) as is."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + path_or_url


def _base_url(conn: Any, extra: dict[str, Any]) -> str:
    """The API base URL from the connection's host (a scheme optional; default https://api.connectif.cloud)."""
    host = (conn.host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" not in host:
        host = f"{extra.get('scheme', 'https')}://{host}"
    parts = urlsplit(host)
    netloc = parts.netloc if (parts.port or not conn.port) else f"{parts.netloc}:{conn.port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def settings_from_connection(conn: Any, extra: dict[str, Any]) -> ConnectifSettings:
    """Build settings from a Connection (host may carry a scheme; default https://api.connectif.cloud)."""
    # The UI may store form fields prefixed (``extra__connectif__<name>``); accept both spellings.
    prefix = "extra__connectif__"
    extra = {**{k[len(prefix) :]: v for k, v in extra.items() if k.startswith(prefix)}, **extra}
    api_key = conn.password or extra.get("api_key")
    if not api_key:
        raise ValueError(
            f"Connection {conn.conn_id!r} has no API key: put it in the password field "
            '(JSON form: "password": "keyId:keySecret").'
        )
    base_url = _base_url(conn, extra)
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


# -- what the server says about its limits ------------------------------------------------------------------
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
class ServerHints:
    """The rate-limit headers of one answer, folded into the shared bucket."""

    limited: bool
    retry_after: float | None
    remaining: int | None
    reset_at: float | None

    @classmethod
    def from_headers(cls, status: int, headers: Any) -> ServerHints:
        remaining = _header_float(headers, "X-RateLimit-Remaining")
        return cls(
            limited=status == 429,
            retry_after=_parse_retry_after(headers.get("Retry-After")),
            remaining=int(remaining) if remaining is not None else None,
            reset_at=_header_float(headers, "X-RateLimit-Reset"),
        )

    def wait_hint(self) -> float | None:
        if self.retry_after is not None:
            return self.retry_after
        if self.reset_at is not None:
            return max(self.reset_at - time.time(), 0.0)
        return None

    def as_state(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`SharedRateLimiter.record_server_state`."""
        return {
            "limited": self.limited,
            "retry_after": self.retry_after,
            "remaining": self.remaining,
            "reset_at": self.reset_at,
        }


def api_error(status: int, text: str, method: str, url: str, hints: ServerHints | None = None) -> ConnectifError:
    """The typed error of an error answer; a 429 is counted in the metrics and carries the server's wait."""
    if status == 429:
        metrics.rate_limited()
    return error_from_response(status, text, method, url, retry_after=hints.wait_hint() if hints else None)


# -- retry policy -----------------------------------------------------------------------------------------------
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


def retry_policy(settings: ConnectifSettings) -> dict[str, Any]:
    """Tenacity arguments shared by the sync (``Retrying``) and async (``AsyncRetrying``) clients."""
    return {
        "retry": retry_if_exception(is_retryable),
        "wait": _wait_strategy(30.0),
        "stop": stop_after_attempt(settings.max_attempts) | stop_after_delay(RETRY_DEADLINE_SECONDS),
        "before_sleep": _log_retry,
        "reraise": True,
    }


def decode_json(method: str, url: str, status: int, body: bytes) -> Any:
    """The decoded JSON body of an answer (None when empty); a body that is not JSON is an API error."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ConnectifError(
            f"Connectif {method} {safe_path(url)} answered {status} with a body that is not JSON", status=status
        ) from exc


def endpoint_path(endpoint: Endpoint, ids: dict[str, str] | None = None) -> str:
    """The endpoint's path with its ids escaped (ids may hold ``/`` or spaces; an ``email`` keeps its ``@``)."""
    path = endpoint[1]
    if ids:
        path = path.format(**{k: quote(v, safe="@" if k == "email" else "") for k, v in ids.items()})
    return path


class ConnectifBaseHook(BaseHook):
    """Settings and transport of a ``connectif`` connection; endpoint methods live in the subclass.

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
        return f"{type(self).__name__}(connectif_conn_id={self.connectif_conn_id!r})"

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

    # -- sync transport -----------------------------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        return self.get_settings().url(path_or_url)

    def _is_api_origin(self, url: str, settings: ConnectifSettings) -> bool:
        return settings.is_api_origin(url)

    def _count(self, method: str, url: str) -> None:
        key = f"{method} {safe_path(url)}"
        ConnectifBaseHook.request_counter[key] = ConnectifBaseHook.request_counter.get(key, 0) + 1
        metrics.api_request(method)

    def _take_token(self, url: str, settings: ConnectifSettings) -> SharedRateLimiter | None:
        """A token of the shared bucket for a request to the API (none for pre-signed storage)."""
        if not settings.is_api_origin(url):
            return None
        limiter = settings.limiter()
        metrics.rate_limit_wait(limiter.acquire())
        return limiter

    def _send_once(
        self, method: str, url: str, *, with_key: bool = True, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One attempt: a token, the request, the server's rate-limit hints into the bucket, typed errors."""
        settings = self.get_settings()
        limiter = self._take_token(url, settings)
        headers = dict(kwargs.pop("headers", None) or {})
        headers.setdefault("Accept", "application/json")
        if with_key:
            headers["Authorization"] = f"apiKey {settings.api_key}"
        self._count(method, url)
        try:
            response = self.get_conn().request(
                method, url, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
            )
        except httpx.ConnectError as exc:
            raise ConnectifTransportError(
                f"Connectif {method} {safe_path(url)}: could not connect ({type(exc).__name__})", method=method
            ) from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            err = ConnectifTransportError(
                f"Connectif {method} {safe_path(url)}: connection failed or dropped ({type(exc).__name__}); "
                "the request may or may not have been processed",
                method=method,
                path=safe_path(url),
            )
            err.body = {"outcome_unknown": True}
            raise err from None
        hints = None
        if limiter is not None:
            hints = ServerHints.from_headers(response.status_code, response.headers)
            limiter.record_server_state(**hints.as_state())
        if response.status_code >= 400:
            raise api_error(response.status_code, response.text, method, url, hints)
        return response

    def _retrying(self) -> Retrying:
        return Retrying(**retry_policy(self.get_settings()))

    def _request(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """An idempotent request with retries; returns the decoded JSON body (None when empty)."""
        url = self._url(path_or_url)
        for attempt in self._retrying():
            with attempt:
                response = self._send_once(method, url, **kwargs)
        return decode_json(method, url, response.status_code, response.content)

    def _call(self, endpoint: Endpoint, ids: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """:meth:`_request` of a declared endpoint."""
        return self._request(endpoint[0], endpoint_path(endpoint, ids), **kwargs)

    def _paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Items of a list endpoint, following ``links.next`` verbatim."""
        url: str | None = self._url(path)
        first = True
        while url:
            page = self._request("GET", url, params=params if first else None) or {}
            first = False
            yield from page.get("results") or []
            url = (page.get("links") or {}).get("next")

    def _get_or_none(self, endpoint: Endpoint, ids: dict[str, str]) -> dict[str, Any] | None:
        """GET an entity; None when Connectif does not know it (404)."""
        try:
            return dict(self._call(endpoint, ids))
        except ConnectifNotFoundError:
            return None

    def _delete_if_exists(self, endpoint: Endpoint, ids: dict[str, str]) -> bool:
        """DELETE an entity; False when it did not exist (404), which callers count as done."""
        try:
            self._call(endpoint, ids)
        except ConnectifNotFoundError:
            return False
        return True

    def _download_text(self, url: str) -> str:
        """A file's text: without the key first (pre-signed storage), with it when the API itself refuses."""
        settings = self.get_settings()
        full = self._url(url)
        for attempt in self._retrying():
            with attempt:
                try:
                    response = self._send_once("GET", full, with_key=False)
                except ConnectifError as exc:
                    if not (exc.status in (401, 403) and settings.is_api_origin(full)):
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

    def _stream_to(self, url: str, dest: Path) -> None:
        """One streamed GET of a (pre-signed) file into ``dest``, without the key."""
        settings = self.get_settings()
        self._take_token(url, settings)
        self._count("GET", url)
        try:
            with self.get_conn().stream("GET", url, timeout=max(settings.timeout, FILE_TIMEOUT_SECONDS)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error(response.status_code, response.text, "GET", url)
                with dest.open("wb") as fh:
                    for chunk in response.iter_bytes(1024 * 1024):
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise ConnectifTransportError(
                f"Connectif GET {safe_path(url)}: download failed ({type(exc).__name__})", method="GET"
            ) from None

    # -- async transport (the triggerer) ---------------------------------------------------------------
    async def _asend_once(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any, bytes]:
        settings = await self.aget_settings()
        limiter = settings.limiter() if settings.is_api_origin(url) else None
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
                f"Connectif {method} {safe_path(url)}: connection failed or dropped ({type(exc).__name__})",
                method=method,
                path=safe_path(url),
            ) from None
        hints = ServerHints.from_headers(status, resp_headers)
        if limiter is not None:
            await limiter.arecord_server_state(**hints.as_state())
        if status >= 400:
            raise api_error(status, body.decode("utf-8", "replace"), method, url, hints)
        return status, resp_headers, body

    async def _arequest(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        settings = await self.aget_settings()
        url = settings.url(path_or_url)
        async for attempt in AsyncRetrying(**retry_policy(settings)):
            with attempt:
                status, _headers, body = await self._asend_once(method, url, **kwargs)
        return decode_json(method, url, status, body)

    async def _acall(self, endpoint: Endpoint, ids: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return await self._arequest(endpoint[0], endpoint_path(endpoint, ids), **kwargs)

    async def _apaginate(self, path: str, params: dict[str, Any] | None = None, max_pages: int = 20) -> list[Any]:
        """Items of a list endpoint, at most ``max_pages`` pages (the triggerer must not spend the budget)."""
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
