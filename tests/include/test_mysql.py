"""The sync library on a real MariaDB (MySQL) server: full runs equal to SQLite's, keys that MySQL would read
as escapes, time zones and NULLs. (The sample ERP and both extraction paths on every server:
``tests/sample_erp/test_sample_erp_servers.py``, ``test_extract_servers.py``.)"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import extract_arrow, load_mapping, run_sync
from connectif_sync.purchases import purchase_payloads
from connectif_sync.state import parse_ts

pytestmark = pytest.mark.mysql


@pytest.mark.parametrize("obj", ["contacts", "products"])
def test_full_run_on_mysql_writes_what_sqlite_writes(mysql_database: str, tmp_path: Path, obj: str) -> None:
    """Types (booleans, decimals, dates, timestamps), NULLs and dirty rows end up as the same CSV bytes, the same
    rejected rows, and a second run after a change sends only that row."""
    kwargs = {"contacts": 500, "products": 80, "orders": 10, "seed": 5, "dirty_rate": 0.1}
    erp.generate(mysql_database, **kwargs)  # type: ignore[arg-type]
    lite = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(lite, **kwargs)  # type: ignore[arg-type]
    my = run_sync(obj, mysql_database, tmp_path / "my", state_url=f"sqlite:///{tmp_path / 'my.db'}")
    li = run_sync(obj, lite, tmp_path / "lite", state_url=f"sqlite:///{tmp_path / 'lite.db'}")
    for key in ("extracted", "invalid", "duplicate", "new", "sent", "rejected_by_reason"):
        assert getattr(my.report, key) == getattr(li.report, key), key
    assert my.report.high_water and li.report.high_water  # DATETIME arrives as a timestamp: the same instant
    assert parse_ts(my.report.high_water) == parse_ts(li.report.high_water)
    assert my.report.sent > 0 and len(my.files) == len(li.files)
    for a, b in zip(my.files, li.files, strict=True):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes()
    from connectif_sync import StateStore

    with StateStore(f"sqlite:///{tmp_path / 'my.db'}") as store:
        for f in my.files:
            store.confirm_file(f.path)
    table = "customers" if obj == "contacts" else "products"
    column = "last_name" if obj == "contacts" else "brand"
    engine = sa.create_engine(mysql_database)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {table} SET {column} = 'Changed', updated_at = :at WHERE id = 3"),
                     {"at": "2026-01-01 00:30:00"})  # fmt: skip
    engine.dispose()
    for incremental in (False, True):
        again = run_sync(obj, mysql_database, tmp_path / f"again-{incremental}",
                         state_url=f"sqlite:///{tmp_path / 'my.db'}", incremental=incremental)  # fmt: skip
        assert again.report.sent == 1, (incremental, again.report)


def test_purchases_from_mysql_equal_sqlite(mysql_database: str, tmp_path: Path) -> None:
    kwargs = {"contacts": 200, "products": 30, "orders": 60, "seed": 8, "dirty_rate": 0.1}
    erp.generate(mysql_database, **kwargs)  # type: ignore[arg-type]
    lite = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(lite, **kwargs)  # type: ignore[arg-type]
    mine = _rounded(list(purchase_payloads(mysql_database, dry_run=True)))
    theirs = _rounded(list(purchase_payloads(lite, dry_run=True)))
    assert mine == theirs and len(mine) > 0


def _rounded(value: Any) -> Any:
    """Prices to the cent: MySQL computes ``unit_price * quantity`` in DECIMAL (608.94), SQLite in binary
    floating point (608.9399999999999)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def test_keys_with_backslashes_and_quotes_are_bound_not_pasted(mysql_database: str, tmp_path: Path) -> None:
    """A key ending in a backslash is an escape inside a MySQL string literal: retried keys and resumed reads
    bind their values (or, for ConnectorX, let the MySQL dialect escape them)."""
    engine = sa.create_engine(mysql_database)
    keys = ["plain", "ends with \\", "quote ' and \\' both", "back\\\\slash", "percent %s"]
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE codes (code VARCHAR(100) PRIMARY KEY, coupon_set_id VARCHAR(20))"))
        conn.execute(sa.text("INSERT INTO codes VALUES (:c, 'set-1')"), [{"c": k} for k in keys])
    engine.dispose()
    mapping_file = tmp_path / "codes.yaml"
    mapping_file.write_text(
        "object: coupons\nsource:\n  table: codes\nkey: code\norder_by: [code]\npartition_by: coupon_set_id\n"
        "fields:\n  code: {column: code, type: string, required: true}\n"
    )
    m = load_mapping(mapping_file)
    for path in ("adbc", "sqlalchemy"):
        got = pa.concat_tables(list(extract_arrow(mysql_database, m, keys=keys[1:4], path=path, readers=1)))
        assert sorted(got.column("code").to_pylist()) == sorted(keys[1:4]), path


def test_time_zones_and_nulls(mysql_database: str, mariadb_server: Any, tmp_path: Path) -> None:
    """A TIMESTAMP is read as the same UTC instant whatever the server's time zone (both paths set the
    session's to UTC); DATETIME is naive, taken as UTC as on every database; NULLs are empty fields."""
    engine = sa.create_engine(mysql_database)
    with engine.begin() as conn:
        conn.execute(sa.text("SET time_zone = '+00:00'"))
        conn.execute(sa.text("CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(100), birthdate DATE NULL, "
                             "points INT NULL, consent TINYINT(1) NULL, updated_at TIMESTAMP NULL)"))  # fmt: skip
        conn.execute(sa.text("INSERT INTO people VALUES (1, 'a@example.com', '1990-02-03', 7, 1, "
                             "'2025-06-30 22:30:00'), (2, 'b@example.com', NULL, NULL, NULL, '2025-06-30 21:00:00')"))
    engine.dispose()
    mapping_file = tmp_path / "people.yaml"
    mapping_file.write_text(
        "object: contacts\nsource:\n  table: people\nkey: _email\norder_by: [id]\nupdated_at: updated_at\n"
        "fields:\n  _email: {column: email, type: email, required: true}\n"
        "  _birthdate: {column: birthdate, type: date}\n  _points: {column: points, type: integer}\n"
        "  _newsletterSubscriptionStatus: {column: consent, type: enum, map: {true: subscribed, false: unsubscribed}}\n"
    )
    mariadb_server.sql("SET GLOBAL time_zone = '+02:00'")  # every new session now reads TIMESTAMPs 2 h ahead
    try:
        for path in ("adbc", "sqlalchemy"):
            result = run_sync("contacts", mysql_database, tmp_path / path, state_url=f"sqlite:///{tmp_path / path}.db",
                              mapping=mapping_file, extract_path=path)  # fmt: skip
            high = result.report.high_water
            assert high is not None and parse_ts(high) == datetime(2025, 6, 30, 22, 30), path
            with open(result.files[0].path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))[1:]
            assert rows == [["a@example.com", "1990-02-03", "7", "subscribed"], ["b@example.com", "", "", ""]], path
    finally:
        mariadb_server.sql("SET GLOBAL time_zone = 'SYSTEM'")


def test_ranged_reads_go_by_pages_read_whole(
    mysql_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read by ranges of the integer key fetches MySQL results by pages (``LIMIT``, resumed after the last
    key), each read whole, since ConnectorX's stream holds the GIL; every row comes once, in order, with
    gaps in the keys (ranges of very different sizes) and a range longer than a page."""
    from connectif_sync.extract import _StreamCursor

    engine = sa.create_engine(mysql_database)
    ids = [*range(1, 300), *range(5000, 5003), *range(90_000, 90_400)]  # dense, sparse, dense
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(80), updated_at DATETIME)"))
        conn.execute(sa.text("INSERT INTO people VALUES (:i, :e, '2025-01-01 00:00:00')"),
                     [{"i": i, "e": f"p{i}@example.com"} for i in ids])  # fmt: skip
    engine.dispose()
    mapping_file = tmp_path / "people.yaml"
    mapping_file.write_text(
        "object: contacts\nsource: {table: people}\nkey: _email\norder_by: [id]\nupdated_at: updated_at\n"
        "fields:\n  _email: {column: email, type: email, required: true}\n"
    )
    calls: list[tuple[str, bool]] = []
    real = _StreamCursor.execute

    def spy(self: Any, sql: str, parameters: Any = None, *, whole: bool = False) -> None:
        calls.append((str(sql), whole))
        real(self, sql, parameters, whole=whole)

    monkeypatch.setattr(_StreamCursor, "execute", spy)
    m = load_mapping(mapping_file)
    got = pa.concat_tables(list(extract_arrow(mysql_database, m, chunk_rows=20, readers=2)))
    assert got.column("id").to_pylist() == ids
    reads = [sql for sql, whole in calls if "FROM people" in sql and "MIN(" not in sql]
    assert reads and all(whole for sql, whole in calls if sql in reads)
    assert all(sql.endswith("LIMIT 20") for sql in reads)
    assert any("id > " in sql for sql in reads)  # a range of more than a page was resumed after its last key
