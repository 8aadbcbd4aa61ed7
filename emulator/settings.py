"""Runtime settings and fault knobs of the emulator.

The contract marks some behaviours as [assumed]; the risky ones are settings here, so that the client can
be tested against both possibilities (e.g. a 429 without ``Retry-After``). Everything is changeable at run
time through ``PATCH /_emulator/settings`` and ``PUT /_emulator/faults``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: 50 MB read strictly as 50,000,000 bytes: a client that stays below it is safe whichever way
#: Connectif counts a megabyte.
MAX_UPLOAD_BYTES = 50_000_000


class Settings(BaseModel):
    """Account-independent behaviour of the emulator (defaults = the contract's numbers)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rate_limit: int = Field(default=100, ge=1, description="requests allowed per account and window")
    rate_limit_window_s: float = Field(default=60.0, gt=0, description="length of the fixed rate-limit window")
    retry_after_header: bool = Field(default=True, description="whether a 429 carries Retry-After")
    in_progress_counts_toward_queue: bool = Field(
        default=True, description="inProgress imports/exports count as queued"
    )
    max_queued_imports: int = Field(default=10, ge=1)
    max_queued_exports: int = Field(default=5, ge=1)
    max_upload_bytes: int = Field(default=MAX_UPLOAD_BYTES, ge=1, description="largest accepted import file")
    import_rows_per_s: float = Field(
        default=5000.0, ge=0, description="import processing speed; 0 = as fast as possible"
    )
    export_processing_s: float = Field(default=2.0, ge=0, description="time an export spends queued/inProgress")
    presigned_url_ttl_s: float = Field(default=6000.0, gt=0, description="validity of export/error-report URLs")
    presigned_rejects_authorization: bool = Field(
        default=True, description="a pre-signed download carrying an Authorization header answers 400 (as S3 does)"
    )
    coupon_counts_lag_s: float = Field(default=10.0, ge=0, description="delay before coupon set counts reflect changes")
    duplicate_purchase_status: int = Field(
        default=409, ge=400, le=499, description="status of a purchase whose purchaseId exists (the contract's 409)"
    )
    max_field_chars: int = Field(default=65536, ge=1, description="longest accepted CSV cell / JSON string")
    export_bom: bool = Field(default=True, description="exported CSVs start with a UTF-8 BOM")
    strict_unknown_fields: bool = Field(
        default=False,
        description=(
            "answer 422 to request fields the contract does not name (export bodies, contact and product "
            "patches, import form fields); by default they are ignored, because Connectif's reference does "
            "not say that it refuses them and a Connectif-written client sends one (filters.activityType)"
        ),
    )


class Faults(BaseModel):
    """Injected failures. Shares are probabilities per API request (0..1); admin paths are never affected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    error_rate: float = Field(default=0.0, ge=0, le=1, description="share of requests answered with error_status")
    error_status: int = Field(default=503, ge=500, le=599)
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="share of connections closed without an answer")
    drop_after_processing: bool = Field(
        default=False, description="drop the connection after the request was processed (the answer is lost)"
    )
    slow_rate: float = Field(default=0.0, ge=0, le=1, description="share of requests delayed by slow_seconds")
    slow_seconds: float = Field(default=0.0, ge=0, le=120)
    storm_seconds: float = Field(default=0.0, ge=0, description="answer every API request with 429 for this long")
    fail_next_imports: int = Field(default=0, ge=0, description="the next N imports to start end in status error")
    import_error_rate: float = Field(default=0.0, ge=0, le=1, description="share of imports that end in status error")
    error_report: Literal["complete", "missing", "short"] = Field(
        default="complete",
        description="error report of an import with row errors: complete; missing (no errorReportFileUrl); "
        "short (the last failed line is left out of the report)",
    )
    hold_import_answers: bool = Field(
        default=False,
        description="create imports, but hold the answer to POST /imports back until the client is gone "
        "(a worker killed, or timed out, while waiting for the upload's answer)",
    )
    seed: int | None = Field(default=None, description="seed of the fault dice, for reproducible runs")


#: Settings the pytest fixture applies before each test: fast processing, no lag.
TEST_SETTINGS: dict[str, object] = {
    "import_rows_per_s": 0.0,
    "export_processing_s": 0.0,
    "coupon_counts_lag_s": 0.0,
}
