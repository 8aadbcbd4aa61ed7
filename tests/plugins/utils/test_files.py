"""Reading the files an import or export moves: error reports, row counts, export ZIPs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from connectif_provider.exceptions import ConnectifExportFailedError
from connectif_provider.utils.files import count_csv_rows, parse_error_report, report_lines, safe_extract_csvs


def test_error_report_parsing() -> None:
    text = '\ufeffline,field,error\n2,_email,invalid email\n5,_birthdate,"bad date, use yyyy-mm-dd"\n'
    assert parse_error_report(text) == [
        {"line": 2, "field": "_email", "error": "invalid email"},
        {"line": 5, "field": "_birthdate", "error": "bad date, use yyyy-mm-dd"},
    ]


def test_error_report_with_other_column_names_or_order() -> None:
    assert parse_error_report("Row,Reason,Column\n3,bad value,_points\n") == [
        {"line": 3, "field": "_points", "error": "bad value"}
    ]
    assert parse_error_report("a,b,c\n7,_email,missing\n") == [{"line": 7, "field": "_email", "error": "missing"}]


def test_count_csv_rows_counts_quoted_newlines_once(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('_email,_name\na@x.com,"multi\nline"\nb@x.com,B\n', encoding="utf-8")
    assert count_csv_rows(path, ",") == 2
    path.write_bytes(b"\xff\xfe\x00bad")
    assert count_csv_rows(path, ",") is None


def test_report_lines_are_distinct_numeric_lines() -> None:
    rows = [{"line": 1, "field": "a"}, {"line": "1", "field": "b"}, {"line": "x"}, {"line": 4}]
    assert report_lines(rows) == {1, 4}


def test_export_zip_is_unpacked_flat_and_must_hold_a_csv(tmp_path: Path) -> None:
    archive = tmp_path / "e.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escape/contacts.csv", "a\n1\n")
        zf.writestr("readme.txt", "no")
    assert safe_extract_csvs(archive, tmp_path / "out") == [tmp_path / "out" / "contacts.csv"]
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "no")
    with pytest.raises(ConnectifExportFailedError, match="no CSV"):
        safe_extract_csvs(archive, tmp_path / "empty")
