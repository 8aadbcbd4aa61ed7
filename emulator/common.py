"""Helpers shared by the API routers: the caller, scope checks, paging and JSON bodies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from pydantic.config import ExtraValues

from emulator.errors import ApiError
from emulator.state import Auth, EmulatorState

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


def state_of(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def caller(request: Request, scope: str) -> Auth:
    """The authenticated caller (set by the gate); 403 when its key lacks ``scope``."""
    auth = request.scope.get("state", {}).get("auth")
    if not isinstance(auth, Auth):
        raise ApiError(401, "Unauthorized")
    if scope not in auth.scopes:
        raise ApiError(
            403,
            f"The API key lacks the permission {scope} needed here; enable it on the key in Connectif",
            requiredScopes=[scope],
        )
    return auth


def paging(request: Request) -> tuple[int, int]:
    """``limit`` (1..100, default 50) and ``skip`` (>= 0) from the query string; 422 otherwise."""
    errors: list[tuple[str, str]] = []
    values = {"limit": DEFAULT_LIMIT, "skip": 0}
    for name in ("limit", "skip"):
        raw = request.query_params.get(name)
        if raw is None:
            continue
        if not raw.isdigit():
            errors.append((name, f'"{raw}" is not a non-negative integer'))
            continue
        values[name] = int(raw)
    if not errors and not 1 <= values["limit"] <= MAX_LIMIT:
        errors.append(("limit", f"must be between 1 and {MAX_LIMIT}"))
    if errors:
        raise ApiError(422, "; ".join(f"{p}: {r}" for p, r in errors), validation_errors=errors)
    return values["limit"], values["skip"]


def page(request: Request, results: list[Any], total: int, limit: int, skip: int) -> dict[str, Any]:
    """Connectif's list shape; ``next``/``prev`` are absolute URLs present only when such a page exists."""
    links: dict[str, str] = {}
    base = str(request.url.replace(query=""))
    others = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "skip")]
    if skip + limit < total:
        links["next"] = f"{base}?{urlencode([*others, ('limit', limit), ('skip', skip + limit)])}"
    if skip > 0:
        links["prev"] = f"{base}?{urlencode([*others, ('limit', limit), ('skip', max(0, skip - limit))])}"
    return {"links": links, "results": results}


async def json_body(request: Request) -> Any:
    """The JSON body; 415 when it is not declared as JSON, 400 when it does not parse."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ApiError(415, f"Send the body as application/json (got Content-Type: {content_type or 'none'})")
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from None


def json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(422, "The body must be a JSON object", validation_errors=[("body", "not an object")])
    return value


def both(router: APIRouter, path: str, methods: list[str], **kwargs: Any) -> Callable[[Any], Any]:
    """Register a collection path with and without the trailing slash (documented vs. used by clients)."""

    def decorator(func: Any) -> Any:
        router.add_api_route(path, func, methods=methods, **kwargs)
        router.add_api_route(path + "/", func, methods=methods, include_in_schema=False, **kwargs)
        return func

    return decorator


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def parse_model(model: type[BaseModel], data: Any, *, extra: ExtraValues | None = None) -> Any:
    """Validate ``data`` with a pydantic model; 422 listing every bad field otherwise.

    ``extra`` overrides the model's (and its nested models') handling of unknown fields for this call.
    """
    try:
        return model.model_validate(data, extra=extra)
    except ValidationError as exc:
        errors = [
            (".".join(str(p) for p in e["loc"]) or "body", str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise ApiError(422, "; ".join(f"{p}: {r}" for p, r in errors[:5]), validation_errors=errors) from None


def unknown_fields_mode(state: EmulatorState) -> ExtraValues:
    """How API bodies treat fields the contract does not name: refused under ``strict_unknown_fields``, else
    ignored (Connectif's reference is silent on extra fields, and a client written by Connectif sends one)."""
    return "forbid" if state.settings.strict_unknown_fields else "ignore"


def refuse_unknown(state: EmulatorState, names: Iterable[str]) -> list[tuple[str, str]]:
    """Validation errors for ``names`` (unknown fields of a body) when the emulator is strict, else none."""
    if not state.settings.strict_unknown_fields:
        return []
    return [(name, "Extra inputs are not permitted") for name in names]


def utc_iso(value: str) -> str:
    """Normalise an ISO 8601 date-time to UTC with ``Z`` (naive means UTC) so that strings sort by time."""
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
