"""List / get-own / delete of job resources (imports, exports): one code path so both kinds answer alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from emulator.common import caller, page, paging, state_of
from emulator.errors import ApiError
from emulator.state import EmulatorState

Renderer = Callable[[EmulatorState, dict[str, Any], str], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """What differs between job kinds: store table, scopes, deletable states, renderer and wording."""

    table: str
    label: str
    read_scope: str
    delete_scope: str
    terminal: tuple[str, ...]
    terminal_text: str
    render: Renderer


def list_jobs(request: Request, kind: JobKind) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, kind.read_scope)
    limit, skip = paging(request)
    jobs, total = state.store.list_jobs(kind.table, auth.account_id, limit, skip)
    base = str(request.base_url)
    return page(request, [kind.render(state, j, base) for j in jobs], total, limit, skip)


def own_job(state: EmulatorState, kind: JobKind, account_id: str, job_id: str) -> dict[str, Any]:
    """The caller's job; 404 also for another account's job, so ids of others are not disclosed."""
    job = state.store.get_job(kind.table, job_id, account_id)
    if job is None:
        raise ApiError(404, f"{kind.label} {job_id} not found in this account")
    return job


def get_job(request: Request, kind: JobKind, job_id: str) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, kind.read_scope)
    return kind.render(state, own_job(state, kind, auth.account_id, job_id), str(request.base_url))


def delete_job(request: Request, kind: JobKind, job_id: str) -> Response:
    """204 after removing the job and its file; 409 while the job may still be worked on."""
    state = state_of(request)
    auth = caller(request, kind.delete_scope)
    with state.store.lock:
        job = own_job(state, kind, auth.account_id, job_id)
        if job["status"] not in kind.terminal:
            raise ApiError(409, f"{kind.label} {job_id} is {job['status']}; only {kind.terminal_text} can be deleted")
        file_path = state.store.job_file(kind.table, job_id)
        state.store.delete_job(kind.table, job_id)
    if file_path:
        Path(file_path).unlink(missing_ok=True)
    return Response(status_code=204)
