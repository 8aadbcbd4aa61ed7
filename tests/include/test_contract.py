"""The library's shared contract: enums whose values are persisted, and the one rejected-row record."""

from __future__ import annotations

import json

from connectif_sync.contract import FileStatus, PurchaseStatus, RejectedRow, RunMode, UploadStatus


def test_run_modes_keep_their_stored_values() -> None:
    # the state store's ``runs.mode`` holds these; the watermark ignores ``plan`` runs by that text
    assert [m.value for m in RunMode] == ["full", "incremental", "full_resync", "plan", "window"]
    assert RunMode("full_resync") is RunMode.FULL_RESYNC and RunMode.PLAN == "plan"
    assert json.dumps({"mode": RunMode.INCREMENTAL}) == '{"mode": "incremental"}'


def test_rejected_row_dict_has_the_stored_columns() -> None:
    row = RejectedRow("a@x.com", "id=4", "_email", "invalid email address", "a@x")
    assert row.as_dict() == {
        "key": "a@x.com", "source_ref": "id=4", "field": "_email", "reason": "invalid email address", "value": "a@x",
    }  # fmt: skip
    assert row.reason_key == "_email: invalid email address"
    assert RejectedRow(None, None, "_email", "required field is empty").as_dict()["value"] is None


def test_store_statuses_keep_their_stored_values() -> None:
    assert [s.value for s in FileStatus] == ["pending", "confirmed", "superseded"]
    assert [s.value for s in UploadStatus] == ["uploading", "imported", "confirmed"]
    assert [s.value for s in PurchaseStatus] == ["confirmed", "duplicate", "failed"]
    assert [s for s in PurchaseStatus if s.done] == [PurchaseStatus.CONFIRMED, PurchaseStatus.DUPLICATE]
    assert PurchaseStatus("failed") == "failed" and not PurchaseStatus.FAILED.done
