"""The files an import or export moves: counting a CSV's rows, reading an error report, unpacking an export.

Kept apart from the hook so that the hook holds requests only, and so that these readers (which decide
what Connectif said about which row) are tested on plain text and files.
"""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from pathlib import Path
from typing import Any

from connectif_provider.exceptions import ConnectifExportFailedError

_REPORT_COLUMNS = {
    "line": ("line", "row", "linenumber", "line_number", "rownumber"),
    "field": ("field", "column", "fieldid", "field_id"),
    "error": ("error", "reason", "message", "detail"),
}


def count_csv_rows(path: Path, delimiter: str) -> int | None:
    """Data rows of a CSV (quoted newlines count once), as Connectif reports ``total``; None if unreadable."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            next(reader, None)
            return sum(1 for row in reader if row)
    except (UnicodeDecodeError, csv.Error):
        return None


def fingerprint(path: str) -> dict[str, int] | None:
    """Size and modification time of the file, or None when it is not on this machine: tells a retry
    whether the file it finds is the one an earlier try uploaded."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _report_index(header: list[str]) -> dict[str, int]:
    """Column positions of line/field/error by name (synonyms accepted); by position when names fail."""
    index: dict[str, int] = {}
    for key, names in _REPORT_COLUMNS.items():
        for pos, name in enumerate(header):
            if name in names:
                index[key] = pos
                break
    return index if len(index) == 3 else {"line": 0, "field": 1, "error": 2}


def parse_error_report(text: str) -> list[dict[str, Any]]:
    """
    The import error report as ``{"line", "field", "error"}`` dicts, ``line`` an int when numeric.

    The columns are [assumed] to be ``line,field,error``; common synonyms (row/column/reason/message) are
    accepted, and a header naming none of them is read by position, so a changed header loses nothing.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    index = _report_index([h.strip().lower().replace(" ", "") for h in next(reader, [])])
    rows: list[dict[str, Any]] = []
    for rec in reader:
        if not any(cell.strip() for cell in rec):
            continue
        cells = {key: (rec[pos].strip() if pos < len(rec) else "") for key, pos in index.items()}
        raw_line = cells["line"]
        line: int | str = int(raw_line) if raw_line.isdigit() else raw_line
        rows.append({"line": line, "field": cells["field"], "error": cells["error"]})
    return rows


def report_lines(rejected_rows: list[dict[str, Any]]) -> set[int]:
    """The distinct data lines an error report names (a line may fail on several fields)."""
    out: set[int] = set()
    for row in rejected_rows:
        try:
            out.add(int(row.get("line")))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return out


def safe_extract_csvs(zip_path: Path, target_dir: Path) -> list[Path]:
    """Unpack the CSV members of an export ZIP into ``target_dir`` (flattened: no path escapes)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ConnectifExportFailedError(f"The export file is not a ZIP archive: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.lower().endswith(".csv"):
                continue
            out = target_dir / Path(info.filename).name
            with archive.open(info) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            paths.append(out)
    if not paths:
        raise ConnectifExportFailedError(f"The export ZIP {zip_path.name} holds no CSV file")
    return sorted(paths)
