"""Both extraction paths read the same rows from every database server: the Arrow-native reader (ADBC on
PostgreSQL, ConnectorX on MySQL) and SQLAlchemy."""

from __future__ import annotations

import itertools
import pathlib
import sys
import threading
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import extract_arrow, resolve_mapping, run_sync
from connectif_sync.extract import arrow_source, integer_ranges, source_dialect
from connectif_sync.mappings import check_source_columns
from connectif_sync.sources import source_engine


@pytest.mark.parametrize("obj", ["contacts", "products", "purchases", "coupons"])
def test_arrow_and_sqlalchemy_paths_extract_the_same_rows(
    server_database: str, request: pytest.FixtureRequest, obj: str
) -> None:
    assert arrow_source(server_database) == request.node.callspec.params["server_database"]
    erp.generate(server_database, contacts=300, products=50, orders=60, coupons=30, seed=3)
    m = resolve_mapping(obj)
    fast = pa.concat_tables(list(extract_arrow(server_database, m, path="adbc", chunk_rows=100)))
    slow = pa.concat_tables(list(extract_arrow(server_database, m, path="sqlalchemy", chunk_rows=100)))
    assert fast.num_rows == slow.num_rows > 0
    assert fast.column_names == slow.column_names
    for name in fast.column_names:
        assert [_norm(v) for v in fast.column(name).to_pylist()] == [_norm(v) for v in slow.column(name).to_pylist()], (
            name
        )


def _norm(v: object) -> object:
    """Same value, same form: numbers and booleans as floats (numeric arrives as decimal or text, MySQL's
    booleans as TINYINT(1)), dates as text."""
    if v is None:
        return v
    if isinstance(v, bool | int | float | Decimal):
        return float(v)
    if isinstance(v, datetime | date):
        return v.isoformat(sep=" ") if isinstance(v, datetime) else v.isoformat()
    try:
        return float(str(v))
    except ValueError:
        return str(v)


def test_ranges_come_from_the_database_estimate_and_always_cover_every_key(
    server_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL and MySQL size the ranges of a full read by their own row estimate: no ``COUNT(*)``, which
    reads the whole table before any read can start. A wrong estimate, far too large or too small, changes
    only how the keys are cut: every row is still read once, in order."""
    erp.generate(server_database, contacts=3000, products=5, orders=5, seed=3)
    engine = sa.create_engine(server_database)
    mysql = engine.dialect.name in ("mysql", "mariadb")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM customers WHERE (id BETWEEN 200 AND 450 OR id % 7 = 0) "
                             "AND id NOT IN (SELECT customer_id FROM orders)"))  # fmt: skip
        conn.execute(sa.text("ANALYZE TABLE customers" if mysql else "ANALYZE customers"))
        expected = [r[0] for r in conn.execute(sa.text("SELECT id FROM customers ORDER BY id"))]
    engine.dispose()
    m = resolve_mapping("contacts")
    seen: list[str] = []

    def log(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", log)
    try:
        ranges = integer_ranges(server_database, m, 100)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", log)
    assert not [s for s in seen if "COUNT(" in s.upper()]
    assert ranges is not None and 10 <= len(ranges) <= 60  # about 2,300 rows in ranges of about 100
    assert ranges[0][0] == expected[0] and ranges[-1][1] > expected[-1]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    for estimate in (10_000_000, 201):  # one range per key; three ranges of about 900 rows
        monkeypatch.setattr(sys.modules["connectif_sync.extract"], "_row_count", lambda *a, n=estimate: n)
        chunks = list(extract_arrow(server_database, m, chunk_rows=100, readers=2))
        assert all(c.num_rows <= 200 for c in chunks)  # a range over two chunks comes in slices of one
        assert [i for c in chunks for i in c.column("id").to_pylist()] == expected


def test_the_source_queries_share_one_engine_and_leave_no_connection_open(server_database: str) -> None:
    """The columns check, the key range and the server's version go through one engine per source URL (its
    dialect is initialised once: on MySQL a few queries each time otherwise), whose connections are not
    pooled: none stays open on the database after them."""
    erp.generate(server_database, contacts=300, products=5, orders=5, seed=3)
    m = resolve_mapping("contacts")
    check_source_columns(m, server_database)
    assert integer_ranges(server_database, m, 100)
    source_dialect(server_database)
    assert source_engine(server_database) is source_engine(sa.make_url(server_database))
    counter = sa.create_engine(server_database)
    mysql = counter.dialect.name in ("mysql", "mariadb")
    others = (
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        if mysql
        else "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        with counter.connect() as conn:
            assert conn.execute(sa.text(others)).scalar() == 0
    finally:
        counter.dispose()


@pytest.mark.postgres
def test_a_run_warms_its_postgresql_source_and_its_connections_share_that_database(
    pg_database: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WarmSource connects in a thread of its own: a connection opened meanwhile shares its driver database,
    close() lets it go (twice is harmless); a source it cannot reach raises nothing there (the run's own read
    says why); other sources start no thread; a whole run opens the driver's database once."""
    import adbc_driver_postgresql.dbapi

    extract = sys.modules["connectif_sync.extract"]  # the package's `extract` is the function
    warm = extract.WarmSource(pg_database)
    try:
        for _ in range(200):  # until the thread's connection is registered
            if extract._PG_OPEN:
                break
            threading.Event().wait(0.01)
        with extract.adbc_connect(pg_database) as conn:
            assert conn._db is extract._PG_OPEN[next(iter(extract._PG_OPEN))][0]._db
    finally:
        warm.close()
        warm.close()
    assert not extract._PG_OPEN
    unreachable = sa.make_url(pg_database).set(port=1)
    extract.WarmSource(unreachable.render_as_string(hide_password=False)).close()
    assert extract.WarmSource(f"sqlite:///{tmp_path / 'x.db'}")._thread is None
    made: list[str] = []
    real = adbc_driver_postgresql.dbapi.connect
    monkeypatch.setattr(adbc_driver_postgresql.dbapi, "connect", lambda uri, **k: made.append(uri) or real(uri, **k))
    clones: list[object] = []
    clone = adbc_driver_postgresql.dbapi.Connection.adbc_clone
    monkeypatch.setattr(
        adbc_driver_postgresql.dbapi.Connection, "adbc_clone", lambda self: clones.append(self) or clone(self)
    )
    erp.generate(pg_database, contacts=300, products=5, orders=2, coupons=0, seed=3)
    result = run_sync("contacts", pg_database, tmp_path / "out", state_url=f"sqlite:///{tmp_path / 's.db'}")
    # one driver database for the run (the warm connection's), which the run's read shared
    assert result.report.extracted == 300 and len(made) == 1 and clones and not extract._PG_OPEN


@pytest.mark.postgres
def test_adbc_connections_open_together_share_one_driver_database(pg_database: str) -> None:
    """The ADBC PostgreSQL connections open at once on one URL share the driver's database (which reads the
    type catalog once): each works, whichever closes first; once all are closed the next connection makes a
    new one; threads opening and closing them together leave no connection open on the server."""
    import threading

    extract = sys.modules["connectif_sync.extract"]  # the package's `extract` is the function

    def value(conn: object, sql: str = "SELECT 1 AS x") -> int:
        with conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(sql)
            return int(cur.fetch_arrow_table().column(0)[0].as_py())

    with extract.adbc_connect(pg_database) as first, extract.adbc_connect(pg_database) as second:
        assert first._db is second._db  # one driver database, shared
        assert value(first) == value(second) == 1
    with extract.adbc_connect(pg_database) as a:
        shared = a._db
        with extract.adbc_connect(pg_database) as b:
            pass  # closed before the one it was cloned from
        assert b._db is shared and value(a) == 1
    assert not extract._PG_OPEN
    with extract.adbc_connect(pg_database) as c:
        assert c._db is not shared  # all were closed: a new database (a type created since is known)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(15):
                with extract.adbc_connect(pg_database) as conn:
                    assert value(conn) == 1
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not extract._PG_OPEN
    with source_engine(pg_database).connect() as conn:
        others = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar()
    assert others == 0
