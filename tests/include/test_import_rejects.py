"""Rows Connectif rejected, by key: an import's error-report lines mapped back to the chunk file's rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from connectif_sync.chunk import ChunkWriter, manifest_path
from connectif_sync.import_rejects import reason_label, record_import_rejects, rejected_rows, with_keys
from connectif_sync.state import StateStore

RUN = "connectif_contacts/manual__1/1"


def _chunk(tmp_path: Path, n: int = 5) -> str:
    keys = [f"k{i}@example.com" for i in range(1, n + 1)]
    data = pa.table({"_email": keys, "_name": ["Ann", 'O"Brien,\nJr.', None, "Zoë", "Bob"][:n]})
    manifest = pa.table({"line": [0] * n, "key": keys, "key_hash": list(range(n)), "row_hash": [7] * n,
                         "updated_at": ["2024-01-01 00:00:00"] * n})  # fmt: skip
    w = ChunkWriter(tmp_path, "contacts", ["_email", "_name"])
    w.write(data, manifest)
    (f,) = w.close()
    return f.path


def _result(path: str, rows: list[dict[str, object]]) -> dict[str, object]:
    return {"import_id": "imp-1", "status": "finished", "total": 5, "success": 5 - len(rows), "errors": len(rows),
            "file_path": path, "rejected_rows": rows}  # fmt: skip


def test_each_rejected_line_gets_its_key_and_value(tmp_path: Path) -> None:
    path = _chunk(tmp_path)
    result = _result(path, [{"line": 2, "field": "_name", "error": "too long"}, {"line": 4, "field": "_email",
                                                                                  "error": "invalid"}])  # fmt: skip
    keyed = with_keys(result)
    # line 2 holds a value with a quote, a comma and a newline: the CSV is read as CSV, not by lines
    assert keyed["rejected_rows"] == [
        {"line": 2, "field": "_name", "error": "too long", "key": "k2@example.com", "value": 'O"Brien,\nJr.'},
        {"line": 4, "field": "_email", "error": "invalid", "key": "k4@example.com", "value": "k4@example.com"},
    ]
    assert result["rejected_rows"][0] == {"line": 2, "field": "_name", "error": "too long"}  # input untouched
    assert rejected_rows(keyed)[1] == {"key": "k4@example.com", "source_ref": "contacts-0001.csv line 4",
                                       "field": "_email", "reason": "Connectif: _email invalid",
                                       "value": "k4@example.com"}  # fmt: skip


def test_lines_that_cannot_be_mapped_keep_no_key(tmp_path: Path) -> None:
    path = _chunk(tmp_path)
    rows = [{"line": 9, "field": "_email", "error": "x"}, {"line": "header", "field": None, "error": "bad header"}]
    assert [r["key"] for r in with_keys(_result(path, rows))["rejected_rows"]] == [None, None]
    manifest_path(path).unlink()  # the run folder is gone: nothing to map with, nothing invented
    keyed = with_keys(_result(path, [{"line": 1, "field": "_email", "error": "x"}]))
    assert "key" not in keyed["rejected_rows"][0]
    assert reason_label(None, "bad header") == "Connectif: bad header"


def test_recorded_with_the_runs_rejected_rows_once(tmp_path: Path) -> None:
    path = _chunk(tmp_path)
    keyed = with_keys(_result(path, [{"line": 3, "field": "_name", "error": "required"}]))
    with StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}") as store:
        store.begin_run("contacts", "full", None, RUN)
        store.record_rejected("contacts", RUN, [{"key": "bad", "source_ref": "id=1", "field": "_email",
                                                 "reason": "invalid email address", "value": "bad"}])  # fmt: skip
        assert record_import_rejects(store, "contacts", RUN, keyed) == 1
        assert record_import_rejects(store, "contacts", RUN, keyed) == 0  # the report task ran again
        assert record_import_rejects(store, "contacts", None, keyed) == 0  # no library run to file it under
        rows = store.rejected("contacts", RUN)
    assert [(r["key"], r["source_ref"], r["reason"]) for r in rows] == [
        ("bad", "id=1", "invalid email address"),
        ("k3@example.com", "contacts-0001.csv line 3", "Connectif: _name required"),
    ]
    assert rows[1]["value"] is None  # the file's empty value
