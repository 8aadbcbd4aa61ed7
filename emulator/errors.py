"""Connectif's error bodies: ``{"status", "title", "detail"}`` plus ``code``/extra fields or ``validationErrors``.

401 is the exception: real clients see a plain-text ``Unauthorized``, so it is not JSON here either.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """Raised by handlers; rendered as Connectif's error body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        validation_errors: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.validation_errors = validation_errors
        self.headers = headers or {}
        self.extra = extra


def invalid(errors: list[tuple[str, str]], detail: str | None = None) -> ApiError:
    """A 422 listing every bad field (path, reason)."""
    text = detail or "; ".join(f"{path}: {reason}" for path, reason in errors[:5])
    return ApiError(422, text, validation_errors=errors)


def error_body(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "title": HTTPStatus(status).phrase, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def render(exc: ApiError) -> Response:
    if exc.status == 401:
        return PlainTextResponse("Unauthorized", status_code=401, headers=exc.headers)
    body = error_body(exc.status, exc.detail, code=exc.code, **exc.extra)
    if exc.validation_errors is not None:
        body["validationErrors"] = [{"path": p, "reason": r} for p, r in exc.validation_errors]
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Route every error through ``render`` so that no answer leaks FastAPI's default shapes."""

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return render(exc)

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [(_loc(tuple(e.get("loc", ()))), str(e.get("msg", "invalid"))) for e in exc.errors()]
        return render(invalid(errors))

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "No such endpoint; check the path against the API reference"
        elif exc.status_code == 405:
            detail = "This method is not allowed on this path"
        return render(ApiError(exc.status_code, detail, headers=dict(exc.headers or {})))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
