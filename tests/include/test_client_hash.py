"""Source hashes computed client-side (``connectif_sync.client_hash``): rows read whole get, from the values
the driver decoded, exactly the hash the database computes for a full scan's probe (PostgreSQL's terms by
kind, MariaDB's text CRCs), for every kind and edge value; what the client cannot reproduce stays the
database's."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, client_hash, run_sync
from connectif_sync.diff import mapping_fingerprint, signed
from connectif_sync.extract import (
    PROBE_HASH_COLUMN,
    arrow_connect,
    build_query,
    client_hashed,
    extract_arrow,
    probe_query,
    read_rows,
    read_table,
    row_versions,
    source_dialect,
)
from connectif_sync.mappings import Mapping, check_source_columns, load_mapping


def _mapping(*columns: str) -> str:
    """A contacts mapping of table ``kinds``: ``email`` as the key, every other column a string field."""
    fields = "".join(f"  {c}: {{column: {c}, type: string}}\n" for c in columns)
    return ("object: contacts\nsource: {table: kinds}\nkey: _email\norder_by: [id]\nupdated_at: updated_at\n"
            f"fields:\n  _email: {{column: email, type: email}}\n{fields}")  # fmt: skip


KINDS = _mapping("name", "small", "mid", "big", "flag", "born", "seen", "at", "price", "code")

ROWS = [
    # id, email (text), name (varchar), small, mid, big, flag, born, seen, at, price (numeric), code (char)
    "1, 'a@x.com', 'Zoë', 7, -5, 9223372036854775807, true, '2025-01-02', '2025-01-02 03:04:05.123456', "
    "'2025-01-02 03:04:05.000001+02', 1.50, 'ab'",
    "2, '', '', -32768, -2147483648, -9223372036854775808, false, 'infinity', 'infinity', 'infinity', 0, ''",
    "3, NULL, NULL, NULL, NULL, NULL, NULL, '-infinity', '-infinity', '-infinity', NULL, NULL",
    "4, 'exactly12byt', 'twenty-four bytes exactl', 0, 2147483647, 4294967296, NULL, '4714-11-24 BC', "
    "'1999-12-31 23:59:59.999999', '1970-01-01 00:00:00+00', -1.5, 'xyz'",
    "5, 'ünïçødé ✓ — 日本語 " + "x" * 100 + "', 'éé', 1, 1, -1, true, '2000-01-01', '2000-01-01 00:00:00', "
    "'2000-01-01 00:00:00+00', 1e20, 'q'",
    "6, 'b@x.com', 'Bob', 2, 3, 4, false, '294276-12-31', '294276-12-31 23:59:59', '1900-06-01 12:00:00-03', 2.25, 'w'",
]


def _exec(url: str, *sql: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for s in sql:
                conn.exec_driver_sql(s)
    finally:
        engine.dispose()


def _kinds_table(url: str, tmp_path: Path, rows: list[str] = ROWS) -> Mapping:
    _exec(
        url,
        "CREATE TABLE kinds (id BIGINT PRIMARY KEY, email TEXT, name VARCHAR(200), small SMALLINT, mid INTEGER, "
        "big BIGINT, flag BOOLEAN, born DATE, seen TIMESTAMP, at TIMESTAMPTZ, price NUMERIC, code CHAR(3), "
        "updated_at TIMESTAMP DEFAULT '2025-01-01')",
        *[f"INSERT INTO kinds (id, email, name, small, mid, big, flag, born, seen, at, price, code) VALUES ({r})"
          for r in rows],
    )  # fmt: skip
    path = tmp_path / "kinds.yaml"
    path.write_text(KINDS, encoding="utf-8")
    mapping = check_source_columns(load_mapping(path), url)
    assert mapping.source_oid is not None  # a plain table: its reads take row versions (tested below)
    # The value hash, which the tests of this part are about: what a view, a partitioned table or a read
    # through SQLAlchemy gets.
    return replace(mapping, source_oid=None)


def _server_hashes(url: str, m: Mapping, fp: int) -> dict[int, int]:
    """Every row's source hash as the server computes it alone (what a full scan's probe compares)."""
    with arrow_connect(url) as conn:
        t = read_table(conn, url, build_query(m, source_dialect(url), source_hash=fp), 1000)
    return dict(zip(t.column("id").to_pylist(), t.column(PROBE_HASH_COLUMN).to_pylist(), strict=True))


def _hashes(tables: Any) -> dict[int, int]:
    t = pa.concat_tables(tables) if not isinstance(tables, pa.Table) else tables
    return dict(zip(t.column("id").to_pylist(), t.column(PROBE_HASH_COLUMN).to_pylist(), strict=True))


def test_rows_read_whole_get_the_servers_hash_for_every_kind_and_edge_value(pg_database: str, tmp_path: Path) -> None:
    """Integers of every width and at their limits, booleans, dates and timestamps (infinite, BC, before and
    after 2000, microseconds), instants, empty and multi-byte text of every length modulo 12, NULLs: the
    hash of a row read whole (a first run's ranges, a filtered read, the rows a probe reads) is the server's,
    although the server computed only the NUMERIC's and the CHAR's terms."""
    url = pg_database
    m = _kinds_table(url, tmp_path)
    assert m.source_encoding == "UTF8"
    client = client_hash.pg_columns(m)
    assert client == {"id", "email", "name", "small", "mid", "big", "flag", "born", "seen", "at"}
    fp = signed(mapping_fingerprint(m))
    sql = build_query(m, source_dialect(url), source_hash=fp, client_hashed=client)
    assert "::text" in sql and "hashint8extended" not in sql and "timestamp_hash" not in sql  # only the others
    expected = _server_hashes(url, m, fp)
    assert len(set(expected.values())) == len(ROWS)
    assert _hashes(extract_arrow(url, m, source_hash=fp, chunk_rows=2)) == expected  # ranges, two readers
    assert _hashes(extract_arrow(url, m, source_hash=fp, readers=1)) == expected  # one query
    since = extract_arrow(url, m, source_hash=fp, since=datetime(2024, 12, 31))  # a filtered read
    assert _hashes(since) == expected
    with arrow_connect(url) as conn:
        assert _hashes(read_rows(conn, url, m, source_dialect(url), 2, ids=[1, 3, 5], source_hash=fp)) == {
            k: expected[k] for k in (1, 3, 5)
        }
        assert _hashes(read_rows(conn, url, m, source_dialect(url), 2, ids=[999], source_hash=fp)) == {}  # none


def test_only_the_server_hashes_when_every_column_is_its(pg_database: str, tmp_path: Path) -> None:
    """Without the C accelerator nothing is hashed client-side, and a mapping whose columns the client cannot
    hash gets the server's expression whole: the same hashes either way."""
    url = pg_database
    m = _kinds_table(url, tmp_path)
    fp = signed(mapping_fingerprint(m))
    expected = _server_hashes(url, m, fp)
    no_kinds = replace(m, source_kinds={})
    assert client_hash.pg_columns(no_kinds) == frozenset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(client_hash, "pg_hash_int64", None)
        assert client_hash.pg_columns(m) == frozenset()
        assert _hashes(extract_arrow(url, m, source_hash=fp, chunk_rows=2)) == expected


def test_a_date_postgresql_cannot_cast_to_a_timestamp_is_named(pg_database: str, tmp_path: Path) -> None:
    """The server's hash casts a date to a timestamp, which stops at 294276 AD: a later date fails the read
    with the column and the value named, as the server's own hash would fail it."""
    url = pg_database
    m = _kinds_table(url, tmp_path)
    _exec(url, "UPDATE kinds SET born = '300000-01-01' WHERE id = 6")
    fp = signed(mapping_fingerprint(m))
    with pytest.raises(ValueError, match=r"column 'born': a date in the year 300000 is outside PostgreSQL's timestamp"):
        list(extract_arrow(url, m, source_hash=fp))
    with pytest.raises(sa.exc.DBAPIError, match="out of range"):
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(build_query(m, source_dialect(url), source_hash=fp)).fetchall()
        finally:
            engine.dispose()


def test_text_of_a_database_not_in_utf8_stays_the_servers(pg_database: str, tmp_path: Path) -> None:
    """A database whose text is not stored as UTF-8 hashes its bytes in that encoding: the client, which
    receives UTF-8, leaves text to the server and still hashes the other kinds."""
    admin = sa.make_url(pg_database).set(database="postgres")
    name = "latin1_kinds"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        rows = [r for r in ROWS if "日本語" not in r]  # not in LATIN1
        m = _kinds_table(url, tmp_path, rows)
        assert m.source_encoding == "LATIN1"
        client = client_hash.pg_columns(m)
        assert "id" in client and not {"email", "name"} & client
        fp = signed(mapping_fingerprint(m))
        assert _hashes(extract_arrow(url, m, source_hash=fp, chunk_rows=2)) == _server_hashes(url, m, fp)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()


def test_a_first_runs_hashes_are_the_ones_the_next_full_scan_probes(
    server_database: str, tmp_path: Path, shaped_rows: list[int]
) -> None:
    """End to end: a first run hashes client-side, its rows are confirmed; the next full scan probes the
    database's hashes, finds every row, reads none whole and sends nothing; a real change is still sent."""
    url = server_database
    erp.generate(url, contacts=300, products=5, orders=5, coupons=0, seed=5, dirty_rate=0.0)
    mapping = check_source_columns(load_mapping(Path(client_hash.__file__).parent / "mappings" / "contacts.yaml"), url)
    if url.startswith("postgresql"):  # a plain table: its row versions are its source hashes
        assert row_versions(url, mapping) and client_hashed(url, mapping) == frozenset()
    else:
        assert client_hashed(url, mapping) == set(client_hash.hashed_columns(mapping))  # all of them, here
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "a", state_url=state, chunk_rows=100)
    with StateStore(state) as store:
        for f in first.files:
            store.confirm_file(f.path)
    shaped_rows.clear()  # the first run's
    second = run_sync("contacts", url, tmp_path / "b", state_url=state, chunk_rows=100)
    r = second.report
    assert (r.sent, r.unchanged, r.refreshed, sum(shaped_rows)) == (0, first.report.sent, 0, 0)
    _exec(url, "UPDATE customers SET last_name = 'Changed' WHERE id = 5")
    third = run_sync("contacts", url, tmp_path / "c", state_url=state, chunk_rows=100)
    assert (third.report.changed, third.report.sent) == (1, 1)


MARIADB = _mapping("name", "small", "big", "flag", "born")

MARIADB_ROWS = [
    "1, 'a@x.com', 'Zoë 😀', -32768, 9223372036854775807, 1, '2025-01-02'",
    "2, '', '', 0, -9223372036854775808, 0, '1000-01-01'",
    "3, NULL, NULL, NULL, NULL, NULL, NULL",
    "4, 'ünïçødé ✓ — 日本語 " + "x" * 300 + "', 'b', 32767, -1, 7, '9999-12-31'",
    "5, 'c@x.com', 'tab\tand\nnewline', 5, 12345678901, -3, '1970-01-01'",
    "6, 'd@x.com', 'trailing  ', 1, 2, NULL, '1969-12-31'",
]


def _mariadb_table(url: str, tmp_path: Path, extra: str = "") -> Mapping:
    _exec(
        url,
        "CREATE TABLE kinds (id INT PRIMARY KEY, email VARCHAR(500), name TEXT CHARACTER SET utf8mb4, "
        f"small SMALLINT, big BIGINT, flag TINYINT(1), born DATE, updated_at DATETIME DEFAULT '2025-01-01'{extra}) "
        "DEFAULT CHARSET = utf8mb4",
        *[f"INSERT INTO kinds (id, email, name, small, big, flag, born) VALUES ({r})" for r in MARIADB_ROWS],
    )
    path = tmp_path / "kinds.yaml"
    path.write_text(MARIADB, encoding="utf-8")
    return check_source_columns(load_mapping(path), url)


@pytest.mark.mysql
def test_mariadb_rows_read_whole_get_the_servers_crcs(mysql_database: str, tmp_path: Path) -> None:
    """Integers at their limits, a TINYINT(1) holding 7 and -3, dates from 1000 to 9999, multi-byte and
    four-byte text (VARCHAR and TEXT), tabs, newlines, trailing spaces, NULLs: the joined text is built and
    hashed here, and every row's hash is the one MariaDB computes (the server computes none of them here)."""
    url = mysql_database
    m = _mariadb_table(url, tmp_path)
    client = client_hashed(url, m)
    assert client == {"id", "email", "name", "small", "big", "flag", "born"}
    fp = signed(mapping_fingerprint(m))
    assert PROBE_HASH_COLUMN not in build_query(m, source_dialect(url), source_hash=fp, client_hashed=client)
    expected = _server_hashes(url, m, fp)
    assert len(set(expected.values())) == len(MARIADB_ROWS)
    assert _hashes(extract_arrow(url, m, source_hash=fp, chunk_rows=2)) == expected  # ranges, two readers
    assert _hashes(extract_arrow(url, m, source_hash=fp, since=datetime(2024, 12, 31))) == expected
    with arrow_connect(url) as conn:
        assert _hashes(read_rows(conn, url, m, source_dialect(url), 2, ids=[1, 3, 5], source_hash=fp)) == {
            k: expected[k] for k in (1, 3, 5)
        }
        assert _hashes(read_rows(conn, url, m, source_dialect(url), 2, ids=[999], source_hash=fp)) == {}  # none


@pytest.mark.mysql
@pytest.mark.parametrize(
    "column",
    ["email VARCHAR(50) CHARACTER SET latin1", "big BIGINT UNSIGNED", "small SMALLINT(5) ZEROFILL", "born DATETIME"],
)
def test_mariadb_rows_are_hashed_by_the_server_when_one_column_is_not_the_clients(
    mysql_database: str, tmp_path: Path, column: str
) -> None:
    """Text in another character set (MariaDB hashes its latin1 bytes), a type the kinds do not tell apart
    (DATETIME and its decimals), an unsigned BIGINT, an integer printed with leading zeros: the server hashes
    the whole joined text, as before."""
    url = mysql_database
    name = column.split()[0]
    _exec(url, "CREATE TABLE kinds (id INT PRIMARY KEY, email VARCHAR(500), name VARCHAR(500), small SMALLINT, "
               "big BIGINT, flag TINYINT(1), born DATE, updated_at DATETIME DEFAULT '2025-01-01') "
               "DEFAULT CHARSET = utf8mb4",
          f"ALTER TABLE kinds MODIFY {column}",
          "INSERT INTO kinds (id, email, name, small, big, flag, born) VALUES "
          "(1, 'é@x.com', 'Zoë', 1, 2, 1, '2025-01-02'), (2, 'b@x.com', NULL, 3, 4, 0, NULL)")  # fmt: skip
    path = tmp_path / "kinds.yaml"
    path.write_text(MARIADB, encoding="utf-8")
    m = check_source_columns(load_mapping(path), url)
    assert client_hashed(url, m) == frozenset(), (name, m.source_kinds)
    fp = signed(mapping_fingerprint(m))
    assert _hashes(extract_arrow(url, m, source_hash=fp, chunk_rows=1)) == _server_hashes(url, m, fp)


def test_text_crcs_of_every_length_agree_with_zlib_and_the_tables() -> None:
    """CRC32 is zlib's; CRC32C as the MariaDB hash computes it (the SSE4.2 instruction on x86-64, else the
    tables) equals the tables' for every length around the 8-byte steps, and the standard check value."""
    import platform
    import random
    import zlib

    from connectif_sync import _hashing as hashing  # make install builds it: a missing build fails, not skips

    assert hashing.text_crcs(b"123456789")[:3] == (0xCBF43926, 0xE3069283, 0xE3069283)
    rnd = random.Random(7)
    for n in [*range(0, 80), 255, 256, 4097]:
        data = rnd.randbytes(n)
        crc32, tables, used, _ = hashing.text_crcs(data)
        assert crc32 == zlib.crc32(data) and used == tables, n
    if platform.machine() == "x86_64":
        assert hashing.text_crcs(b"")[3]  # every x86-64 CPU of the last 15 years has SSE4.2


# PostgreSQL row versions -------------------------------------------------------------------------------------


def _versions(url: str, m: Mapping, fp: int) -> dict[int, int]:
    """Every row's source hash as a full scan's probe makes it from the row versions it reads."""
    with arrow_connect(url) as conn:
        t = read_table(conn, url, probe_query(m, source_dialect(url), fp, versions=True), 1000)
    assert PROBE_HASH_COLUMN not in t.column_names and "email" not in t.column_names  # no value read
    tokens = client_hash.version_tokens(
        t.column(client_hash.XMIN_COLUMN).combine_chunks(), t.column(client_hash.CTID_COLUMN).combine_chunks(),
        fp, m.source_oid or 0,
    )  # fmt: skip
    return dict(zip(t.column("id").to_pylist(), tokens.tolist(), strict=True))


def test_only_a_plain_table_that_the_user_may_read_whole_gets_row_versions(pg_database: str, tmp_path: Path) -> None:
    """A view has no row versions; the tables of a partitioned or an inherited table share positions (two
    rows of two of them can have the same transaction and position); a user allowed some columns only may not
    read the system columns: those keep the value hash. A plain table gets its OID (part of every version's
    hash: two tables filled by one transaction have rows at the same positions)."""
    url = pg_database
    _exec(
        url,
        "CREATE TABLE people (id BIGINT PRIMARY KEY, email TEXT, updated_at TIMESTAMP)",
        "CREATE VIEW people_v AS SELECT * FROM people",
        "CREATE TABLE parts (id BIGINT, email TEXT, updated_at TIMESTAMP) PARTITION BY RANGE (id)",
        "CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)",
        "CREATE TABLE parent (id BIGINT PRIMARY KEY, email TEXT, updated_at TIMESTAMP)",
        "CREATE TABLE child () INHERITS (parent)",
    )
    path = tmp_path / "m.yaml"

    def mapping(table: str, user_url: str = url) -> Mapping:
        path.write_text(f"object: contacts\nsource: {{table: {table}}}\nkey: _email\norder_by: [id]\n"
                        "fields:\n  _email: {column: email, type: email}\n", encoding="utf-8")  # fmt: skip
        return check_source_columns(load_mapping(path), user_url)

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        oid = conn.exec_driver_sql("SELECT 'people'::regclass::oid").scalar()
    engine.dispose()
    assert mapping("people").source_oid == oid and row_versions(url, mapping("people"))
    for table in ("people_v", "parts", "parent"):
        assert mapping(table).source_oid is None, table
        assert not row_versions(url, mapping(table))
    assert mapping("child").source_oid is not None  # a child has no children: its positions are its own
    _exec(url, "DROP ROLE IF EXISTS some_columns", "CREATE ROLE some_columns LOGIN",
          "GRANT SELECT (id, email, updated_at) ON people TO some_columns")  # fmt: skip
    try:
        limited = sa.make_url(url).set(username="some_columns").render_as_string(hide_password=False)
        assert mapping("people", limited).source_oid is None
    finally:
        _exec(url, "DROP OWNED BY some_columns", "DROP ROLE some_columns")


def test_a_rows_version_changes_with_each_update_and_only_then(pg_database: str, tmp_path: Path) -> None:
    """The source hash made from a row version: the same in every read (the probe, the rows read whole by
    ranges, by keys or by a filter); new after any update of the row, even one that changes no value (a
    full scan then reads that row whole and finds it unchanged); the same after the row is locked or the
    table vacuumed; another for another mapping and for another table holding rows written by the same
    transaction at the same positions."""
    url = pg_database
    m = check_source_columns(replace(_kinds_table(url, tmp_path), source_oid=None), url)  # as a run resolves it
    assert row_versions(url, m) and client_hashed(url, m) == frozenset()
    fp = signed(mapping_fingerprint(m))
    sql = build_query(m, source_dialect(url), source_hash=fp, versions=True)
    assert "xmin" in sql and "hashtext" not in sql and "::text" not in sql
    before = _versions(url, m, fp)
    assert len(set(before.values())) == len(ROWS) and 0 not in before.values()
    assert _hashes(extract_arrow(url, m, source_hash=fp, chunk_rows=2)) == before  # ranges, two readers
    assert _hashes(extract_arrow(url, m, source_hash=fp, readers=1)) == before  # one query
    assert _hashes(extract_arrow(url, m, source_hash=fp, since=datetime(2024, 12, 31))) == before  # filtered
    with arrow_connect(url) as conn:
        got = read_rows(conn, url, m, source_dialect(url), 2, ids=[1, 3, 5], source_hash=fp)
        assert client_hash.XMIN_COLUMN not in got.column_names  # made into the hash, then dropped
        assert _hashes(got) == {k: before[k] for k in (1, 3, 5)}
    _exec(url, "UPDATE kinds SET name = name WHERE id = 2", "UPDATE kinds SET small = 8 WHERE id = 4")
    _exec(url, "SELECT * FROM kinds WHERE id = 5 FOR UPDATE")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("VACUUM (FREEZE) kinds")  # frozen rows keep their transaction number
    engine.dispose()
    after = _versions(url, m, fp)
    assert {k for k in before if before[k] != after[k]} == {2, 4}
    assert _hashes(extract_arrow(url, m, source_hash=fp, chunk_rows=2)) == after
    other_fp = signed(mapping_fingerprint(replace(m, key="_other")))
    assert not set(_versions(url, m, other_fp).values()) & set(after.values())
    _exec(
        url,
        "CREATE TABLE twins (LIKE kinds INCLUDING ALL)",
        "CREATE TABLE twins2 (LIKE kinds INCLUDING ALL)",
        "INSERT INTO twins SELECT * FROM kinds; INSERT INTO twins2 SELECT * FROM kinds",
    )  # one transaction
    path = tmp_path / "twins.yaml"
    tokens = []
    for table in ("twins", "twins2"):
        path.write_text(KINDS.replace("table: kinds", f"table: {table}"), encoding="utf-8")
        t = check_source_columns(load_mapping(path), url)
        tokens.append(set(_versions(url, t, fp).values()))
    assert len(tokens[0]) == len(ROWS) and not tokens[0] & tokens[1]


def test_a_full_scan_reads_whole_only_the_rows_whose_version_changed(
    pg_database: str, tmp_path: Path, shaped_rows: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on PostgreSQL: a store whose rows were confirmed with value hashes (a version before row
    versions) costs one full scan that reads every row and stores their versions, sending nothing; the next
    full scans read whole only the rows updated since: one whose values changed is sent, one updated to the
    same values is not, and its new version is stored."""
    url = pg_database
    erp.generate(url, contacts=300, products=5, orders=5, coupons=0, seed=5, dirty_rate=0.0)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    from connectif_sync import mappings

    real = mappings._pg_columns
    with monkeypatch.context() as mp:  # the version before: no row versions
        mp.setattr(mappings, "_pg_columns", lambda conn, table: (*real(conn, table)[:3], None))
        first = run_sync("contacts", url, tmp_path / "a", state_url=state, chunk_rows=100)
    with StateStore(state) as store:
        for f in first.files:
            store.confirm_file(f.path)
    shaped_rows.clear()
    upgraded = run_sync("contacts", url, tmp_path / "b", state_url=state, chunk_rows=100).report
    assert (upgraded.sent, upgraded.refreshed, sum(shaped_rows)) == (0, first.report.sent, first.report.sent)
    shaped_rows.clear()
    second = run_sync("contacts", url, tmp_path / "c", state_url=state, chunk_rows=100).report
    assert (second.sent, second.unchanged, second.refreshed, sum(shaped_rows)) == (0, first.report.sent, 0, 0)
    _exec(url, "UPDATE customers SET last_name = 'Changed' WHERE id = 5",
          "UPDATE customers SET first_name = first_name WHERE id = 7")  # fmt: skip
    shaped_rows.clear()
    third = run_sync("contacts", url, tmp_path / "d", state_url=state, chunk_rows=100).report
    assert (third.changed, third.sent, third.refreshed, sum(shaped_rows)) == (1, 1, 1, 2)


def test_version_hashes_are_the_same_in_c_and_numpy_and_wrong_values_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The accelerator and its numpy fallback agree at every width's edges and on sliced arrays; a value of
    another size, a NULL or another type is refused with the column named (a query not built by the sync)."""
    import numpy as np

    from connectif_sync import hashing

    rng = np.random.default_rng(7)
    edges = [0, 1, 2**16 - 1, 2**31, 2**32 - 1]
    xids = [*edges, *rng.integers(0, 2**32, 2000).tolist()]
    blocks = [*edges, *rng.integers(0, 2**32, 2000).tolist()]
    lines = [0, 1, 291, 2**16 - 1, 0, *rng.integers(0, 2**16, 2000).tolist()]
    xmin = pa.array([x.to_bytes(4, "big") for x in xids], pa.binary())
    ctid = pa.array([b.to_bytes(4, "big") + ln.to_bytes(2, "big") for b, ln in zip(blocks, lines, strict=True)])
    assert hashing.version_tokens is not None
    c = client_hash.version_tokens(xmin, ctid, -5, 16385)
    monkeypatch.setattr(hashing, "version_tokens", None)
    assert (client_hash.version_tokens(xmin, ctid, -5, 16385) == c).all()
    assert (client_hash.version_tokens(xmin.slice(3, 50), ctid.slice(3, 50), -5, 16385) == c[3:53]).all()
    assert len(set(c.tolist())) == len(c) and 0 not in c
    with pytest.raises(TypeError, match="'__connectif_xmin': a row version read as values of another size"):
        client_hash.version_tokens(pa.array([b"\x00" * 8]), ctid.slice(0, 1), 0, 1)
    with pytest.raises(TypeError, match="'__connectif_ctid': a row version read as int64"):
        client_hash.version_tokens(xmin.slice(0, 1), pa.array([1]), 0, 1)
    with pytest.raises(TypeError, match="'__connectif_xmin'"):
        client_hash.version_tokens(pa.array([None], pa.binary()), ctid.slice(0, 1), 0, 1)
    with pytest.raises(ValueError, match="2 transactions for 1 positions"):
        client_hash.version_tokens(xmin.slice(0, 2), ctid.slice(0, 1), 0, 1)
