"""The ASGI layer in front of the API: faults, authentication, the rate limit and the counters.

It runs for every path except the emulator's own (``/_emulator/`` admin, ``/_files/`` pre-signed
downloads), so that unknown paths and wrong methods are authenticated and rate limited like any other
request of the account, as a real gateway would.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.errors import error_body
from emulator.ratelimit import Decision
from emulator.state import Auth, EmulatorState

OWN_PREFIXES = ("/_emulator", "/_files")


def endpoint_label(scope: Scope, app: Any = None) -> str:
    """``METHOD /route/{template}``: the route that served the request, or would have (401/429/faults)."""
    route = scope.get("route")
    if route is None and app is not None:
        for candidate in getattr(getattr(app, "router", None), "routes", []):
            match, _child = candidate.matches(scope)
            if match == Match.FULL:
                route = candidate
                break
    path = getattr(route, "path", None) or "(unmatched)"
    if path != "/" and path.endswith("/"):
        path = path[:-1]
    return f"{scope.get('method', '?')} {path}"


class Gate:
    """Pure ASGI middleware (no BaseHTTPMiddleware, so streaming uploads stay streams)."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith(OWN_PREFIXES):
            await self.app(scope, receive, send)
            return
        state = self.state
        status_box = [0]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = int(message["status"])
            await send(message)

        try:
            await self._handle(scope, receive, counting_send, send)
        finally:
            if status_box[0]:
                state.stats.count(endpoint_label(scope, self.app), status_box[0])

    async def _handle(self, scope: Scope, receive: Receive, send: Send, raw_send: Send) -> None:
        state = self.state
        faults = state.faults
        if faults.slow_seconds > 0 and state.roll(faults.slow_rate):
            state.stats.fault("slow")
            await asyncio.sleep(faults.slow_seconds)
        if state.roll(faults.drop_rate):
            state.stats.fault("drop")
            if faults.drop_after_processing:
                await self._process(scope, receive, _swallow)
            await _drop(raw_send)
            return
        if faults.hold_import_answers and scope.get("method") == "POST" and path_of(scope) in IMPORT_PATHS:
            state.stats.fault("held")
            await self._process(scope, receive, _swallow)  # the import is created; its answer never leaves
            await _until_disconnect(receive)
            return
        if state.roll(faults.error_rate):
            state.stats.fault("error")
            status = faults.error_status
            await _json(send, status, error_body(status, "Injected server error (emulator fault)"), {})
            return
        await self._process(scope, receive, send)

    async def _process(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth_header = headers.get("authorization", "")
        scheme, _, key = auth_header.partition(" ")
        found = state.store.authenticate(key.strip()) if scheme.lower() == "apikey" and key.strip() else None
        if found is None:
            await _plain(send, 401, "Unauthorized")
            return
        record, account = found
        settings = state.settings
        storm = state.storm_until > time.time()
        if storm:
            state.stats.fault("storm")
        decision = state.limiter.hit(account["id"], settings.rate_limit, settings.rate_limit_window_s, storm)
        rate_headers = decision.headers(settings.retry_after_header)
        if not decision.allowed:
            detail = (
                f"Rate limit exceeded: {decision.limit} requests per {settings.rate_limit_window_s:g} s "
                "for this account. Wait for the window to reset."
            )
            await _json(send, 429, error_body(429, detail), rate_headers)
            return
        if account["blocked"] or record["blocked"]:
            what = "account" if account["blocked"] else "API key"
            await _json(send, 403, error_body(403, f"The {what} is blocked"), rate_headers)
            return
        scope.setdefault("state", {})["auth"] = Auth(
            key=record["key"], account_id=account["id"], scopes=record["scopes"], domains=account["authorizedDomains"]
        )
        await self.app(scope, receive, _with_headers(send, decision, rate_headers))


def _with_headers(send: Send, _decision: Decision, extra: dict[str, str]) -> Send:
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return wrapped


async def _swallow(_message: Message) -> None:
    return None


IMPORT_PATHS = ("/imports", "/imports/")


def path_of(scope: Scope) -> str:
    return str(scope.get("path", ""))


async def _until_disconnect(receive: Receive) -> None:
    """Wait until the client closes the connection (its body was read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _drop(send: Send) -> None:
    """Close the connection without an answer (the client sees a disconnect)."""
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()
        await asyncio.sleep(0)
        return
    # Not under uvicorn: announce a body and stop half way, which also breaks the response.
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise ConnectionAbortedError("emulator fault: dropped connection")


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
