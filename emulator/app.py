"""The emulator as an ASGI application: FastAPI routers behind the ``Gate`` (faults, auth, rate limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from emulator import admin, api_entities, api_exports, api_imports, errors
from emulator.gate import Gate
from emulator.state import EmulatorState
from emulator.workers import Workers


def create_app(state: EmulatorState) -> Gate:
    """Build the app around ``state``, with the background workers that process its imports and exports
    (they resume queued jobs at start-up)."""
    state.workers = Workers(state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.workers.resume()
        yield
        state.workers.stop()

    app = FastAPI(
        title="Connectif API emulator",
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/_emulator/docs",
        openapi_url="/_emulator/openapi.json",
        redoc_url=None,
    )
    app.state.emulator = state
    errors.install(app)
    app.include_router(admin.router)
    app.include_router(api_imports.files_router)
    app.include_router(api_imports.router)
    app.include_router(api_exports.router)
    app.include_router(api_entities.router)
    return Gate(app, state)
