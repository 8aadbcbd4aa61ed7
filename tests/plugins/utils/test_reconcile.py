"""Finding the import an upload of unknown outcome created, and re-attaching a task to it."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectif_provider.models import ImportType
from connectif_provider.utils import reconcile
from connectif_provider.utils.reconcile import ImportUpload, created_by_upload, import_duration
from tests.fixtures.provider import DictStore

OPTIONS = {"delimiter": ",", "overrideExisting": False, "updateOnlyEmptyFields": False}


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_created_by_upload_matches_type_options_rows_and_claims_once() -> None:
    now = time.time()
    base = {"type": "contacts", "origin": "api", "options": OPTIONS, "total": 3, "createdAt": _at(now)}
    imports = [
        {**base, "id": f"other-rows-{now}", "total": 4},
        {**base, "id": f"app-{now}", "origin": "app"},
        {**base, "id": f"ours-{now}"},
        {**base, "id": f"old-{now}", "createdAt": _at(now - 3600)},
    ]
    found = created_by_upload(imports, ImportType.CONTACTS, OPTIONS, 3, since=now)
    assert found is not None and found["id"] == f"ours-{now}"
    assert created_by_upload(imports, ImportType.CONTACTS, OPTIONS, 3, since=now) is None  # claimed already
    assert reconcile.claim(f"ours-{now}") is False


def test_import_duration() -> None:
    resource = {"startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:30.5Z"}
    assert import_duration(resource) == 90.5
    assert import_duration({"createdAt": "2026-01-01T00:00:00Z"}) is None


class _Hook:
    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        self.resources = resources

    def get_import(self, import_id: str) -> dict[str, Any]:
        return self.resources[import_id]

    def find_created_import(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        return None


def test_intent_then_import_id_in_the_persisted_format(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("_email\na@x.com\nb@x.com\n")
    store = DictStore()
    upload = ImportUpload(
        hook=_Hook({"i1": {"id": "i1", "status": "inProgress"}}), file_path=str(path),
        import_type=ImportType.CONTACTS, options=OPTIONS, delimiter=",", store=store, ledger=None,
        state_key="connectif_import", logger=logging.getLogger("test"),
    )  # fmt: skip
    intent = upload.record_intent()
    assert set(store.data["connectif_import"]) == {"file_path", "file", "upload_started", "rows"}
    assert intent["rows"] == 2
    upload.record_import(intent, "i1")
    assert store.data["connectif_import"] == {**intent, "import_id": "i1"}
    assert upload.earlier_import() == {"id": "i1", "status": "inProgress"}
    path.write_text("_email\nc@x.com\n")  # written again: its rows must be sent, not re-attached
    assert upload.earlier_import() is None
