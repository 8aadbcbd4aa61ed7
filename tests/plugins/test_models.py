"""The API's limits are written once (models.py); the files that cannot import them must agree with them."""

from __future__ import annotations

import json
from pathlib import Path

from connectif_provider.get_provider_info import CONN_FIELDS
from connectif_provider.models import (
    ACCOUNT_RATE_LIMIT_PER_MINUTE,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    EventStatus,
    ExportStatus,
    ImportStatus,
    JobKind,
)

REPO = Path(__file__).resolve().parents[2]


def test_pools_hold_as_many_slots_as_the_account_queues() -> None:
    """pools.json is loaded by `airflow pools import` (JSON, no import): its slots must be the queue sizes."""
    pools = json.loads((REPO / "pools.json").read_text())
    assert pools["connectif_imports"]["slots"] == JobKind.IMPORTS.max_queued == 10
    assert pools["connectif_exports"]["slots"] == JobKind.EXPORTS.max_queued == 5


def test_the_default_budget_stays_under_the_account_limit() -> None:
    assert DEFAULT_RATE_LIMIT_PER_MINUTE < ACCOUNT_RATE_LIMIT_PER_MINUTE
    assert CONN_FIELDS["rate_limit_per_minute"]["schema"]["default"] == DEFAULT_RATE_LIMIT_PER_MINUTE


def test_job_kinds_declare_what_differs() -> None:
    assert (JobKind.IMPORTS.noun, JobKind.IMPORTS.status_enum, JobKind.IMPORTS.queue_full_code) == (
        "Import", ImportStatus, "E0401",
    )  # fmt: skip
    assert (JobKind.EXPORTS.noun, JobKind.EXPORTS.status_enum, JobKind.EXPORTS.queue_full_code) == (
        "Export", ExportStatus, "E0301",
    )  # fmt: skip
    assert [s.value for s in EventStatus] == ["success", "error", "timeout"]


def test_the_librarys_copy_of_the_limits_is_the_providers() -> None:
    """The sync library may not import the provider (nor the provider load the library in the triggerer), so
    the library's estimates keep the few limits they need as constants: this is what keeps them the same."""
    from connectif_provider import models
    from connectif_sync import chunk, contract

    assert contract.IMPORT_QUEUE == models.MAX_QUEUED_IMPORTS
    assert contract.REQUESTS_PER_MINUTE == models.DEFAULT_RATE_LIMIT_PER_MINUTE
    assert chunk.DEFAULT_MAX_FILE_BYTES <= models.MAX_FILE_BYTES
