"""``/exports``: contacts, activities and data-explorer exports, downloaded through pre-signed URLs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from emulator.api_imports import queued_statuses
from emulator.common import (
    both,
    caller,
    drop_none,
    json_body,
    json_object,
    parse_model,
    state_of,
    unknown_fields_mode,
)
from emulator.errors import ApiError
from emulator.jobs_api import JobKind, delete_job, get_job, list_jobs
from emulator.state import EmulatorState
from emulator.store import new_id, now_iso

router = APIRouter()

MAX_RANGE = timedelta(days=31)


def _parse_moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


class ExportFilters(BaseModel):
    # Unknown fields: ignored, or refused under the strict_unknown_fields setting (parse_model's ``extra``).
    model_config = ConfigDict(extra="ignore")
    segmentId: str | None = None
    fromDate: str | None = None
    toDate: str | None = None
    activityTypes: list[str] | None = None
    #: The spelling the public CLI connectif-2-gc-storage (written by a Connectif developer) sends for
    #: ``--activityTypes``; the reference names ``activityTypes``. Filters the same way (union of both).
    activityType: list[str] | str | None = None

    def activity_types(self) -> list[str]:
        """The requested activity types from both spellings, in order, without repeats (empty: all types)."""
        single = [self.activityType] if isinstance(self.activityType, str) else self.activityType or []
        return list(dict.fromkeys([*(self.activityTypes or []), *single]))

    def stored(self) -> dict[str, Any]:
        """The filters as the Export resource shows them: documented names only."""
        return drop_none(
            {
                "segmentId": self.segmentId,
                "fromDate": self.fromDate,
                "toDate": self.toDate,
                "activityTypes": self.activity_types() or None,
            }
        )

    @model_validator(mode="after")
    def _range(self) -> ExportFilters:
        for name in ("fromDate", "toDate"):
            value = getattr(self, name)
            if value is not None:
                try:
                    _parse_moment(value)
                except ValueError:
                    raise ValueError(f"{name} {value!r} is not an ISO 8601 date-time") from None
        if (self.fromDate is None) != (self.toDate is None):
            raise ValueError("fromDate and toDate go together")
        if self.fromDate and self.toDate:
            start, end = _parse_moment(self.fromDate), _parse_moment(self.toDate)
            if end < start:
                raise ValueError("toDate is before fromDate")
            if end - start > MAX_RANGE:
                raise ValueError("the range from fromDate to toDate spans more than 31 days; split it")
        return self


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    exportType: Literal["contacts", "activities"]
    delimiter: Literal[",", ";"] = ","
    dateFormat: Literal["ISO", "L", "LL", "LLL"] = "ISO"
    filters: ExportFilters = Field(default_factory=ExportFilters)
    version: Literal["v1"] = "v1"

    @model_validator(mode="after")
    def _activities_need_range(self) -> ExportIn:
        if self.exportType == "activities" and not (self.filters.fromDate and self.filters.toDate):
            raise ValueError("activities exports need filters.fromDate and filters.toDate (at most 31 days apart)")
        return self


class ExplorerFilters(BaseModel):
    model_config = ConfigDict(extra="ignore")
    reportId: str = Field(min_length=1)
    fromDate: date
    toDate: date

    @model_validator(mode="after")
    def _range(self) -> ExplorerFilters:
        if self.toDate < self.fromDate:
            raise ValueError("toDate is before fromDate")
        if self.toDate - self.fromDate > MAX_RANGE:
            raise ValueError("the range from fromDate to toDate spans more than 31 days; split it")
        return self


class ExplorerIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    delimiter: Literal[",", ";"] = ","
    filters: ExplorerFilters


def render_export(state: EmulatorState, job: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The Export resource; a finished one gets a freshly minted pre-signed ``fileUrl`` on every read."""
    data = drop_none({k: v for k, v in job.items() if k != "startedAt"})
    if job["status"] == "finished" and job.get("fileName"):
        data["fileUrl"] = state.presign(base_url, "exports", job["id"], job["fileName"])
    return data


def _create(request: Request, state: EmulatorState, account_id: str, job: dict[str, Any]) -> JSONResponse:
    settings = state.settings
    with state.store.lock:
        queued = state.store.count_jobs("exports", account_id, queued_statuses(state))
        if queued >= settings.max_queued_exports:
            raise ApiError(
                400,
                f"There are already {queued} exports queued (maximum {settings.max_queued_exports}); "
                "wait until one finishes",
                code="E0301",
            )
        state.store.insert_job("exports", account_id, job, None)
        state.stats.saw_queue(exports=queued + 1)
    state.workers.kick("exports", account_id)
    return JSONResponse(render_export(state, job, str(request.base_url)), status_code=201)


def _new_job(export_type: str, delimiter: str, date_format: str | None, filters: dict[str, Any]) -> dict[str, Any]:
    return drop_none(
        {
            "id": new_id(),
            "exportType": export_type,
            "status": "queued",
            "progress": 0,
            "total": 0,
            "delimiter": delimiter,
            "dateFormat": date_format,
            "filters": filters,
            "createdAt": now_iso(),
        }
    )


@both(router, "/exports", ["POST"], status_code=201)
async def create_export(request: Request) -> JSONResponse:
    state = state_of(request)
    auth = caller(request, "export:write")
    data = json_object(await json_body(request))
    body: ExportIn = parse_model(ExportIn, data, extra=unknown_fields_mode(state))
    job = _new_job(body.exportType, body.delimiter, body.dateFormat, body.filters.stored())
    return _create(request, state, auth.account_id, job)


@router.post("/exports/type/data-explorer", status_code=201)
async def create_explorer_export(request: Request) -> JSONResponse:
    state = state_of(request)
    auth = caller(request, "export:write")
    data = json_object(await json_body(request))
    body: ExplorerIn = parse_model(ExplorerIn, data, extra=unknown_fields_mode(state))
    filters = body.filters.model_dump(mode="json")
    return _create(request, state, auth.account_id, _new_job("data-explorer", body.delimiter, None, filters))


EXPORT_JOBS = JobKind(
    table="exports",
    label="Export",
    read_scope="export:read",
    delete_scope="export:write",
    terminal=("finished", "error"),
    terminal_text="finished or errored exports",
    render=render_export,
)


@both(router, "/exports", ["GET"])
async def list_exports(request: Request) -> dict[str, Any]:
    return list_jobs(request, EXPORT_JOBS)


@router.get("/exports/{export_id}")
async def get_export(request: Request, export_id: str) -> dict[str, Any]:
    return get_job(request, EXPORT_JOBS, export_id)


@router.delete("/exports/{export_id}", status_code=204)
async def delete_export(request: Request, export_id: str) -> Response:
    return delete_job(request, EXPORT_JOBS, export_id)
