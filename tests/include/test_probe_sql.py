"""The probe of a full scan on PostgreSQL and MySQL: the database computes each row's source hash in SQL
(``extract.source_hash_sql``), every read of the sync adds it, and a probed second run gives exactly what a
run reading every value gives (reports, files, rejected rows)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, run_sync
from connectif_sync import probe as probing
from connectif_sync.diff import database_hashes, mapping_fingerprint, source_hashes
from connectif_sync.extract import (
    PROBE_HASH_COLUMN,
    arrow_connect,
    build_query,
    has_crc32c,
    probe_query,
    read_table,
    source_dialect,
    source_hash_sql,
)
from connectif_sync.mappings import check_source_columns, load_mapping
from connectif_sync.sources import ValueKind

pipeline = sys.modules["connectif_sync.pipeline"]  # the package exports a function of the same name

DATABASES = ["postgresql", pytest.param("mysql", marks=pytest.mark.mysql)]


def _database(request: pytest.FixtureRequest, kind: str) -> str:
    return str(request.getfixturevalue("pg_database" if kind == "postgresql" else "mysql_database"))


def _exec(url: str, *sql: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for s in sql:
                conn.exec_driver_sql(s)
    finally:
        engine.dispose()


def _signed(fp: np.uint64) -> int:
    return int(np.array([fp], np.uint64).view(np.int64)[0])


def _second_run(url: str, state: Path, out: Path, probe: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    used: list[bool] = []
    real = probing.probe

    def spy(*a: Any, **k: Any) -> Any:
        chunks = real(*a, **k) if probe else None
        used.append(chunks is not None)
        return chunks

    copy = out.parent / f"{out.name}-state.db"
    copy.write_bytes(state.read_bytes())
    with monkeypatch.context() as mp:
        mp.setattr(probing, "probe", spy)
        result = run_sync("contacts", url, out, state_url=f"sqlite:///{copy}", chunk_rows=100)
    report = {k: v for k, v in result.report.as_dict().items() if k not in ("run_id", "duration_s")}
    with StateStore(f"sqlite:///{copy}") as store:
        rejected = sorted(
            (r["key"] or "", r["source_ref"] or "", r["field"], r["reason"], r["value"] or "")
            for r in store.rejected("contacts", limit=100_000)
        )
    files = [(Path(f.path).name, Path(f.path).read_bytes()) for f in result.files]
    return {"report": report, "files": files, "rejected": rejected, "probed": used == [True]}


@pytest.mark.parametrize("kind", DATABASES)
def test_probed_full_scan_gives_what_a_full_read_gives(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _database(request, kind)
    summary = erp.generate(url, contacts=2000, products=20, orders=10, coupons=0, seed=5, dirty_rate=0.1)
    clean = set(range(1, 2001)) - set().union(*summary.dirty["customers"].values())
    state = tmp_path / "state.db"
    first = run_sync("contacts", url, tmp_path / "first", state_url=f"sqlite:///{state}", chunk_rows=100)
    with StateStore(f"sqlite:///{state}") as store:
        for f in first.files:
            store.confirm_file(f.path)
    moved = sorted(i for i in clean if i % 50 == 7)
    invalid, gone, twin, gone2, touched = (sorted(clean - set(moved))[k] for k in (300, 10, 20, 1400, 500))
    _exec(
        url,
        "UPDATE customers SET last_name = 'Moved', updated_at = '2026-02-01 00:00:00' WHERE MOD(id, 50) = 7",
        f"UPDATE customers SET updated_at = '2026-03-01 00:00:00' WHERE id = {touched}",  # the latest: unchanged
        f"UPDATE customers SET email = 'not an email' WHERE id = {invalid}",
        f"DELETE FROM customers WHERE id IN ({gone}, {gone2})",
        "INSERT INTO customers (id, customer_code, email, first_name, created_at, updated_at) SELECT 5000, "
        f"'X', email, 'Twin', created_at, updated_at FROM customers WHERE id = {twin}",
        "INSERT INTO customers (id, customer_code, email, first_name, created_at, updated_at) "
        "VALUES (5001, 'Y', 'new.one@example.com', 'New', '2025-01-01', '2025-01-01')",
    )
    probed = _second_run(url, state, tmp_path / "probed", True, monkeypatch)
    full = _second_run(url, state, tmp_path / "full", False, monkeypatch)
    assert probed["probed"] and not full["probed"]
    assert probed["report"] == full["report"]
    r = probed["report"]
    assert (r["changed"], r["new"], r["deleted"], r["sent"]) == (len(moved), 1, 3, len(moved) + 1)
    assert r["unchanged"] > 1500
    assert r["high_water"].startswith("2026-03-01 00:00:00")  # a row the probe found unchanged still counts
    assert probed["files"] == full["files"]
    assert probed["rejected"] == full["rejected"]
    assert any(x[1] == "id=5000" and x[3].startswith("duplicate key") for x in probed["rejected"])


PEOPLE = """
object: contacts
source: {table: people}
key: _email
order_by: [id]
fields:
  _email: {column: email, type: email, required: true}
  _name: {column: name, type: string}
  _points: {column: points, type: integer}
  _birthdate: {column: born, type: date}
  _newsletterSubscriptionStatus: {column: consent, type: enum, map: {true: subscribed, false: unsubscribed}}
"""


@pytest.mark.parametrize("kind", DATABASES)
def test_the_database_hash_changes_with_every_value_and_with_the_mapping(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """One value changed in any column (text, integer, date, boolean, a value becoming NULL, text moving
    from one column to the next) changes the row's source hash; the full read and the probe compute the same
    hash, which is the one the run uses; another fingerprint gives another hash."""
    url = _database(request, kind)
    boolean = "BOOLEAN" if kind == "postgresql" else "TINYINT(1)"
    _exec(url, f"CREATE TABLE people (id INTEGER PRIMARY KEY, email VARCHAR(50), name VARCHAR(50), points INTEGER, "
               f"born DATE, consent {boolean})",
          "INSERT INTO people VALUES (1, 'a@x.com', 'Ann', 5, '2001-02-03', TRUE)")  # fmt: skip
    path = tmp_path / "people.yaml"
    path.write_text(PEOPLE, encoding="utf-8")
    m = load_mapping(path)
    fp = _signed(mapping_fingerprint(m))

    def check(dialect: sa.Dialect) -> None:
        def hash_of(query: str) -> int:
            with arrow_connect(url) as conn:
                t = read_table(conn, url, query, 100)
            value = int(database_hashes(t.column(PROBE_HASH_COLUMN))[0])
            assert value != 0
            assert source_hashes(t, m, mapping_fingerprint(m)).view(np.int64).tolist() == [value]
            return value

        def both() -> int:
            full, probed = hash_of(build_query(m, dialect, source_hash=fp)), hash_of(probe_query(m, dialect, fp))
            assert full == probed
            return full

        seen = [both()]
        changes = [
            "points = 6", "born = '2001-02-04'", "consent = FALSE", "name = NULL", "points = NULL",
            "email = 'a@x.co', name = 'mAnn'", "email = 'b@x.com'",
        ]  # fmt: skip
        for change in changes:
            _exec(url, f"UPDATE people SET {change} WHERE id = 1")
            seen.append(both())
            _exec(url, "UPDATE people SET email = 'a@x.com', name = 'Ann', points = 5, born = '2001-02-03', "
                       "consent = TRUE WHERE id = 1")  # fmt: skip
        assert both() == seen[0]  # the same values, the same hash
        if kind == "mysql" and not has_crc32c(dialect):  # MD5 as versions before wrote it, as a BIGINT
            expr = source_hash_sql(m, dialect, fp)
            assert expr is not None and expr.startswith("UNHEX(LEFT(MD5(") and expr.endswith("), 16))")
            inner = expr[len("UNHEX(LEFT(MD5(") : -len("), 16))")]  # CONCAT_WS(...): the hashed text
            earlier = f"CAST(CONV(SUBSTRING(MD5({inner}), 1, 15), 16, 10) AS SIGNED)"
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                assert conn.execute(sa.text(f"SELECT {earlier} FROM people WHERE id = 1")).scalar() == seen[0]
            engine.dispose()
        assert len(set(seen)) == len(seen), seen
        assert hash_of(probe_query(m, dialect, fp ^ 1)) != seen[0]

    md5 = sa.make_url(url).get_dialect()()  # a dialect that never connected: MD5 on any MySQL server
    check(md5)
    if kind == "mysql":  # the server's own dialect: MariaDB 10.8+ (the tests' 10.11) hashes with CRC32C and CRC32
        server = source_dialect(url)
        assert has_crc32c(server) and "CRC32C(" in (source_hash_sql(m, server, fp) or "")
        check(server)
    if kind == "postgresql":  # each column hashed by its kind of value, as a run does (the mapping knows them)
        m = check_source_columns(m, url)
        assert m.source_kinds == {
            "id": ValueKind.INTEGER, "email": ValueKind.TEXT, "name": ValueKind.TEXT, "points": ValueKind.INTEGER,
            "born": ValueKind.DATE, "consent": ValueKind.BOOLEAN,
        }  # fmt: skip
        assert "hashint8extended(" in (source_hash_sql(m, md5, fp) or "")
        check(md5)


def test_postgresql_hashes_each_kind_by_value_and_the_others_as_text(pg_database: str, tmp_path: Path) -> None:
    """PostgreSQL's source hash of a column whose kind is known (integer, boolean, date, timestamp with and
    without time zone, text) is its value's; any other is its text's: a NUMERIC ``1.0`` becoming ``1.00`` (an
    equal value, another CSV) changes the hash, as does a CHAR, a real, NULL becoming empty text, an instant
    moving by a microsecond. Equal values in a new row, the same hash."""
    url = pg_database
    _exec(url, "CREATE TABLE things (id BIGINT PRIMARY KEY, email TEXT, code CHAR(4), price NUMERIC, "
               "ratio REAL, seen TIMESTAMP, at TIMESTAMPTZ, small SMALLINT, updated_at TIMESTAMP)",
          "INSERT INTO things VALUES (1, 'a@x.com', 'ab', 1.5, 0.25, '2025-01-02 03:04:05.123456', "
          "'2025-01-02 03:04:05+02', 7, '2025-01-01')")  # fmt: skip
    path = tmp_path / "things.yaml"
    path.write_text(THINGS, encoding="utf-8")
    m = check_source_columns(load_mapping(path), url)
    kinds = {c: m.source_kinds[c] for c in ("id", "email", "code", "price", "ratio", "seen", "at", "small")}
    assert kinds == {
        "id": ValueKind.INTEGER, "email": ValueKind.TEXT, "code": ValueKind.OTHER, "price": ValueKind.OTHER,
        "ratio": ValueKind.OTHER, "seen": ValueKind.TIMESTAMP, "at": ValueKind.TIMESTAMPTZ,
        "small": ValueKind.INTEGER,
    }  # fmt: skip
    dialect = source_dialect(url)
    fp = _signed(mapping_fingerprint(m))
    expr = source_hash_sql(m, dialect, fp)
    assert expr is not None and "::text" in expr and "AT TIME ZONE 'UTC'" in expr and 'COLLATE "C"' in expr

    def hash_of(row: int = 1) -> int:
        with arrow_connect(url) as conn:
            t = read_table(conn, url, f"SELECT {expr} AS h FROM things WHERE id = {row}", 10)
        return int(t.column("h")[0].as_py())

    def in_time_zone(zone: str) -> int:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SET TIME ZONE '{zone}'")
            value = int(conn.exec_driver_sql(f"SELECT {expr} FROM things WHERE id = 1").scalar_one())
        engine.dispose()
        return value

    seen = [hash_of()]
    assert in_time_zone("America/New_York") == in_time_zone("Asia/Kolkata") == seen[0]  # the instant, not its text
    changes = [
        "price = 1.50", "price = 1.51", "ratio = 0.5", "code = 'abc'", "seen = seen + interval '1 microsecond'",
        "at = at + interval '1 microsecond'", "small = 8", "email = NULL", "email = ''", "updated_at = now()",
    ]  # fmt: skip
    for change in changes:
        _exec(url, f"UPDATE things SET {change} WHERE id = 1")
        seen.append(hash_of())
    assert seen[-1] == seen[-2]  # updated_at is not part of the source hash
    seen.pop()
    assert len(set(seen)) == len(seen), seen
    _exec(url, "INSERT INTO things SELECT 2, email, code, price, ratio, seen, at, small, updated_at FROM things")
    _exec(url, "UPDATE things SET id = 3 WHERE id = 1")  # row 2 has row 3's values, and row 3 another key
    assert hash_of(2) != hash_of(3)
    _exec(url, "UPDATE things SET id = 1 WHERE id = 3", "DELETE FROM things WHERE id = 2")
    assert hash_of(1) == seen[-1]


THINGS = """
object: contacts
source: {table: things}
key: _email
order_by: [id]
updated_at: updated_at
fields:
  _email: {column: email, type: email}
  code: {column: code, type: string}
  price: {column: price, type: string}
  ratio: {column: ratio, type: string}
  seen: {column: seen, type: string}
  at: {column: at, type: string}
  small: {column: small, type: integer}
"""
