"""``/imports``: bulk CSV uploads of contacts, products and coupons, and the pre-signed downloads."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from emulator.common import both, caller, drop_none, refuse_unknown, state_of
from emulator.errors import ApiError
from emulator.jobs_api import JobKind, delete_job, get_job, list_jobs
from emulator.state import EmulatorState
from emulator.store import new_id, now_iso
from emulator.uploads import ACCEPTED_FILE_TYPES, inspect_csv, receive_upload
from emulator.validation import PRODUCT_REQUIRED

router = APIRouter()
files_router = APIRouter()

IMPORT_TYPES = ("contacts", "products", "coupons")
#: The form fields of create-import besides the file part (contract section 5).
IMPORT_FIELDS = ("type", "delimiter", "overrideExisting", "updateOnlyEmptyFields", "couponSetId")
TERMINAL = ("finished", "error", "cancelled")


def queued_statuses(state: EmulatorState) -> list[str]:
    return ["queued", "inProgress"] if state.settings.in_progress_counts_toward_queue else ["queued"]


def render_import(state: EmulatorState, job: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The Import resource; a finished/errored import with failed rows gets a fresh pre-signed report URL."""
    data = drop_none(dict(job))
    missing = state.faults.error_report == "missing"
    if job["status"] in ("finished", "error") and job.get("errors", 0) > 0 and not missing:
        data["errorReportFileUrl"] = state.presign(base_url, "imports", job["id"], "error-report.csv")
    return data


def _bool_field(fields: dict[str, str], name: str, errors: list[tuple[str, str]]) -> bool:
    raw = fields.get(name)
    if raw is None:
        errors.append((name, "is required (true or false)"))
        return False
    if raw.strip().lower() not in ("true", "false"):
        errors.append((name, f'"{raw}" must be true or false'))
        return False
    return raw.strip().lower() == "true"


def _check_fields(state: EmulatorState, account_id: str, fields: dict[str, str]) -> tuple[dict[str, Any], list[Any]]:
    errors: list[tuple[str, str]] = []
    kind = fields.get("type")
    if kind is None:
        errors.append(("type", f"is required: one of {', '.join(IMPORT_TYPES)}"))
    elif kind not in IMPORT_TYPES:
        errors.append(("type", f'"{kind}" is not one of {", ".join(IMPORT_TYPES)}'))
    delimiter = fields.get("delimiter")
    if delimiter is None:
        errors.append(("delimiter", 'is required: "," or ";"'))
    elif delimiter not in (",", ";"):
        errors.append(("delimiter", f'"{delimiter}" is not "," or ";"'))
    override = _bool_field(fields, "overrideExisting", errors)
    only_empty = _bool_field(fields, "updateOnlyEmptyFields", errors)
    if only_empty and not override:
        errors.append(("updateOnlyEmptyFields", "true is only allowed together with overrideExisting=true"))
    options: dict[str, Any] = {
        "delimiter": delimiter,
        "overrideExisting": override,
        "updateOnlyEmptyFields": only_empty,
    }
    set_id = fields.get("couponSetId")
    if kind == "coupons":
        if not set_id:
            errors.append(("couponSetId", "is required for coupon imports"))
        else:
            coupon_set = state.store.get_coupon_set_raw(set_id, account_id)
            if coupon_set is None:
                errors.append(("couponSetId", f'no coupon set "{set_id}" in this account'))
            elif coupon_set.get("type") != "multiple":
                errors.append(("couponSetId", f'coupon set "{set_id}" is of type single; codes go to multiple sets'))
            options["couponSetId"] = set_id
    errors += refuse_unknown(state, (name for name in fields if name not in IMPORT_FIELDS))
    return options, errors


def _check_header(kind: str, header: list[str]) -> list[tuple[str, str]]:
    if kind == "contacts" and "_email" not in header:
        return [("file", f"contact imports need an _email column; the header has: {', '.join(header)}")]
    if kind == "products":
        missing = [name for name in PRODUCT_REQUIRED if name not in header]
        if missing:
            return [("file", f"product imports need the column(s) {', '.join(missing)}")]
    if kind == "coupons" and header != ["code"]:
        return [("file", f"coupon imports have a single column named code; the header has: {', '.join(header)}")]
    return []


@both(router, "/imports", ["POST"], status_code=201)
async def create_import(request: Request) -> JSONResponse:
    state = state_of(request)
    auth = caller(request, "import:write")
    settings = state.settings
    import_id = new_id()
    dest = state.store.files_dir / "imports" / f"{import_id}.csv"
    try:
        upload = await receive_upload(request, dest, settings.max_upload_bytes)
    except ClientDisconnect:
        return JSONResponse({"status": 400, "title": "Bad Request", "detail": "client went away"}, status_code=400)
    try:
        options, errors = _check_fields(state, auth.account_id, upload.fields)
        if upload.field_too_large:
            errors.append((upload.field_too_large, "the field value is too long"))
        if upload.file_path is None:
            errors.append(("file", "is required: the CSV file part named file"))
        elif upload.file_type not in ACCEPTED_FILE_TYPES:
            errors.append(("file", f"the part's content type {upload.file_type} is not text/csv"))
        elif upload.utf8_error:
            errors.append(("file", upload.utf8_error + "; save the file as UTF-8"))
        if errors:
            raise ApiError(422, "; ".join(f"{p}: {r}" for p, r in errors), validation_errors=errors)
        header, total = await run_in_threadpool(inspect_csv, dest, options["delimiter"])
        header_errors = _check_header(upload.fields["type"], header)
        if header_errors:
            raise ApiError(422, header_errors[0][1], validation_errors=header_errors)
        job = {
            "id": import_id,
            "type": upload.fields["type"],
            "status": "queued",
            "origin": "api",
            "options": options,
            "total": total,
            "success": 0,
            "errors": 0,
            "createdAt": now_iso(),
        }
        statuses = queued_statuses(state)
        with state.store.lock:
            queued = state.store.count_jobs("imports", auth.account_id, statuses)
            if queued >= settings.max_queued_imports:
                raise ApiError(
                    400,
                    f"There are already {queued} imports queued (maximum {settings.max_queued_imports}); "
                    "wait until one finishes",
                    code="E0401",
                )
            state.store.insert_job("imports", auth.account_id, job, str(dest))
            state.stats.saw_queue(imports=queued + 1)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    state.workers.kick("imports", auth.account_id)
    return JSONResponse(render_import(state, job, str(request.base_url)), status_code=201)


IMPORT_JOBS = JobKind(
    table="imports",
    label="Import",
    read_scope="import:read",
    delete_scope="import:delete",
    terminal=TERMINAL,
    terminal_text="finished, error or cancelled imports",
    render=render_import,
)


@both(router, "/imports", ["GET"])
async def list_imports(request: Request) -> dict[str, Any]:
    return list_jobs(request, IMPORT_JOBS)


@router.get("/imports/{import_id}")
async def get_import(request: Request, import_id: str) -> dict[str, Any]:
    return get_job(request, IMPORT_JOBS, import_id)


@router.delete("/imports/{import_id}", status_code=204)
async def delete_import(request: Request, import_id: str) -> Response:
    return delete_job(request, IMPORT_JOBS, import_id)


# --- pre-signed downloads (no API key, not rate limited: they stand for the file store) ------------------
def _check_link(request: Request, kind: str, resource_id: str) -> None:
    """Pre-signed URLs carry their own authorisation; like S3, a second one (the API key) is refused."""
    state = state_of(request)
    expires = request.query_params.get("expires")
    signature = request.query_params.get("signature")
    if "authorization" in request.headers and state.settings.presigned_rejects_authorization:
        raise ApiError(
            400,
            "Only one auth mechanism allowed: this pre-signed URL must be downloaded without the Authorization header",
        )
    if not expires or not signature or not expires.isdigit():
        raise ApiError(403, "The link is not signed; request a fresh URL from the API")
    if not state.check_signature(kind, resource_id, int(expires), signature):
        raise ApiError(403, "The link signature does not match; request a fresh URL from the API")
    if int(expires) < time.time():
        raise ApiError(403, "The link has expired; GET the resource again for a fresh URL")


def _report_lines(rows: Iterator[tuple[int, str, str]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["line", "field", "error"])
    for count, row in enumerate(rows, 1):
        writer.writerow(row)
        if count % 2000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


@files_router.get("/_files/imports/{import_id}/{file_name}")
async def download_report(request: Request, import_id: str, file_name: str) -> Response:
    state = state_of(request)
    _check_link(request, "imports", import_id)
    if state.store.get_job("imports", import_id) is None:
        raise ApiError(404, f"Import {import_id} no longer exists")
    rows = state.store.import_errors(import_id)
    if state.faults.error_report == "short":  # fault: the last failed line is left out
        listed = list(rows)
        last = listed[-1][0] if listed else None
        rows = iter([r for r in listed if r[0] != last])
    return StreamingResponse(
        _report_lines(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{file_name}"'},
    )


@files_router.get("/_files/exports/{export_id}/{file_name}")
async def download_export(request: Request, export_id: str, file_name: str) -> Response:
    state = state_of(request)
    _check_link(request, "exports", export_id)
    file_path = state.store.job_file("exports", export_id)
    if not file_path or not Path(file_path).exists():
        raise ApiError(404, f"Export {export_id} has no file (deleted, or not finished)")
    return FileResponse(file_path, media_type="application/zip", filename=file_name)
