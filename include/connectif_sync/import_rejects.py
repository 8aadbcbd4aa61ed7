"""The rows Connectif rejected in an import, by key: its error report names *data lines* of the uploaded chunk
file; the file's manifest (written next to it, see :mod:`connectif_sync.chunk`) says which key each line holds.

Why at report time: the chunk files and their manifests live in the run's work folder, which is removed once
the run reported. So the ``report`` task puts the key (and the rejected field's value) into each rejected row
of the import's outcome (kept in the run history, shown on the run tab) and records the rows with the run's
other rejected rows (the rejected-rows page and its CSV), before the folder goes.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from connectif_sync.chunk import read_manifest
from connectif_sync.contract import RejectedRow

#: Every reason of a row Connectif rejected starts with this (the rows our validation set aside never do).
CONNECTIF_PREFIX = "Connectif:"


class _RejectedStore(Protocol):
    """What :func:`record_import_rejects` needs of :class:`connectif_sync.store.StateStore` (public methods)."""

    def record_rejected(self, obj: str, run_id: str, rows: list[dict[str, Any]]) -> None: ...

    def rejected_page(
        self, obj: str, run_id: str, *, key: str | None = ..., limit: int = ...
    ) -> list[dict[str, Any]]: ...


def reason_label(field: Any, error: Any) -> str:
    """``"Connectif: <field> <error>"``: the reason a row Connectif rejected is counted and filed under."""
    words = " ".join(str(w) for w in (field, error or "rejected") if w not in (None, ""))
    return f"{CONNECTIF_PREFIX} {words}"


def source_ref(file_path: str, line: Any) -> str:
    """Where the row was in what was sent: the chunk file's name and its data line (as Connectif counts)."""
    return f"{Path(file_path).name} line {line}"


def with_keys(result: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an import's result (``ConnectifImportOperator``) whose ``rejected_rows`` each carry the
    ``key`` of their line and the ``value`` the file held for their ``field``.

    A line outside the file, or a file without its manifest (already removed), leaves ``key`` None: the row
    still shows by line, and the reason why is the error report's own.
    """
    out = dict(result)
    rows = [dict(r) for r in result.get("rejected_rows") or []]
    out["rejected_rows"] = rows
    path = result.get("file_path")
    if not rows or not path:
        return out
    try:
        _, manifest = read_manifest(path)
    except FileNotFoundError:
        return out
    wanted = sorted({line for line in (_line(r) for r in rows) if line is not None and 1 <= line <= manifest.num_rows})
    # manifest lines are the file's data lines 1..n in order: line i is row i - 1
    idx = pa.array([w - 1 for w in wanted], pa.int64())
    keys = dict(zip(wanted, pc.take(manifest.column("key"), idx).to_pylist(), strict=True))
    fields = {str(r.get("field")) for r in rows if r.get("field")}
    values = _field_values(path, wanted, fields) if wanted else {}
    for r in rows:
        line = _line(r)
        r["key"] = keys.get(line) if line is not None else None
        if line is not None and r.get("field") and (line, str(r["field"])) in values:
            r["value"] = values[(line, str(r["field"]))]
    return out


def _line(row: Mapping[str, Any]) -> int | None:
    try:
        return int(row["line"])
    except (KeyError, TypeError, ValueError):
        return None


def _field_values(path: str, lines: list[int], fields: set[str]) -> dict[tuple[int, str], str | None]:
    """The text of ``fields`` (those that are columns of the file) on data ``lines`` of a chunk CSV."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            columns = next(csv.reader(fh), [])
    except OSError:
        return {}
    present = sorted(f for f in fields if f in columns)
    if not present:
        return {}
    try:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                include_columns=present, column_types={c: pa.string() for c in present}, strings_can_be_null=True
            ),
        )
    except (OSError, pa.ArrowInvalid):
        return {}
    valid = [line for line in lines if line <= table.num_rows]
    taken = table.take(pa.array([line - 1 for line in valid], pa.int64()))
    out: dict[tuple[int, str], str | None] = {}
    for name in present:
        for line, value in zip(valid, taken.column(name).to_pylist(), strict=True):
            out[(line, name)] = value
    return out


def rejected_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a keyed result (:func:`with_keys`) as the state store's rejected rows."""
    path = str(result.get("file_path") or "")
    return [
        RejectedRow(
            key=r.get("key"),
            source_ref=source_ref(path, r.get("line")),
            field=str(r.get("field") or ""),
            reason=reason_label(r.get("field"), r.get("error")),
            value=r.get("value"),
        ).as_dict()
        for r in result.get("rejected_rows") or []
    ]


def record_import_rejects(store: _RejectedStore, obj: str, run_id: str | None, result: Mapping[str, Any]) -> int:
    """Record the rows Connectif rejected in one import (keyed result) with the run's rejected rows; returns
    how many. A ``report`` task that runs again records nothing twice: the import's first row is looked up."""
    rows = rejected_rows(result)
    if not rows or not run_id:
        return 0
    first = rows[0]
    if first["key"] is not None:
        earlier = store.rejected_page(obj, run_id, key=str(first["key"]), limit=1000)
        if any(r.get("source_ref") == first["source_ref"] and r.get("reason") == first["reason"] for r in earlier):
            return 0
    store.record_rejected(obj, run_id, rows)
    return len(rows)
