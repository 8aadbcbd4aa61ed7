"""Extraction: the exact SQL per dialect, streaming in bounded chunks, both paths, pandas frames."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

import sample_erp as erp
from connectif_sync import Window, extract, extract_arrow, resolve_mapping, run_sync
from connectif_sync.extract import RangeReads, _bound, build_query, integer_ranges, prefetch


def test_queries_per_dialect() -> None:
    m = resolve_mapping("coupons")
    assert build_query(m, sqlite.dialect()) == (
        "SELECT code, id, coupon_set_id FROM (SELECT id, coupon_set_id, code FROM coupon_pool "
        "WHERE status = 'unused') src ORDER BY id"
    )
    c = resolve_mapping("contacts")
    since = datetime(2025, 12, 31, 23, 0)
    lite = build_query(c, sqlite.dialect(), since=since)
    assert lite.endswith("FROM customers WHERE updated_at >= '2025-12-31 23:00:00' ORDER BY +id")
    pg = build_query(c, postgresql.dialect(), since=since)
    assert pg.endswith("FROM customers WHERE updated_at >= '2025-12-31 23:00:00' ORDER BY id")
    p = resolve_mapping("purchases")
    q = build_query(p, postgresql.dialect(), window=Window(datetime(2025, 1, 1), datetime(2025, 1, 2)))
    assert q.endswith(
        "WHERE ordered_at >= '2025-01-01 00:00:00' AND ordered_at < '2025-01-02 00:00:00' ORDER BY order_id, line_id"
    )


def test_streams_bounded_chunks_on_both_paths(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=1000, products=5, orders=5, seed=2)
    m = resolve_mapping("contacts")
    for path in ("adbc", "sqlalchemy"):
        chunks = list(extract_arrow(url, m, chunk_rows=300, path=path, readers=1))
        assert [c.num_rows for c in chunks] == [300, 300, 300, 100], path
        assert chunks[0].column("id").to_pylist()[:3] == [1, 2, 3]
    frames = list(extract(url, m, chunk_rows=400, readers=1))
    assert [len(f) for f in frames] == [400, 400, 200]
    assert isinstance(frames[0].dtypes["email"], pd.ArrowDtype)
    since = list(extract_arrow(url, m, since=datetime(2025, 12, 1)))
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        expected = conn.execute(sa.text("SELECT count(*) FROM customers WHERE updated_at >= '2025-12-01'")).scalar()
    engine.dispose()
    assert sum(c.num_rows for c in since) == expected > 0


def test_prefetch_passes_items_and_errors() -> None:
    assert list(prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]

    def broken():  # type: ignore[no-untyped-def]
        yield 1
        raise RuntimeError("source went away")

    got = []
    with pytest.raises(RuntimeError, match="source went away"):
        for x in prefetch(broken()):
            got.append(x)
    assert got == [1]


def _rows(chunks: list[Any]) -> list[dict[str, object]]:
    # Row by row: ADBC infers each query's types from its rows, so an all-NULL column may come as int64
    return [row for c in chunks for row in c.to_pylist()]


def test_parallel_range_reads_give_the_same_rows_in_the_same_order(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=1000, products=5, orders=5, seed=2)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # gaps and a far outlier: ranges of uneven sizes, some empty
        conn.execute(sa.text("DELETE FROM customers WHERE id BETWEEN 200 AND 450 OR id % 7 = 0"))
        conn.execute(sa.text("UPDATE customers SET id = 1000000 WHERE id = 999"))
    engine.dispose()
    m = resolve_mapping("contacts")
    ranges = integer_ranges(url, m, 100)
    assert ranges is not None and ranges[0][0] == 1 and ranges[-1][1] > 1_000_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous, no overlap
    sequential = list(extract_arrow(url, m, chunk_rows=100, readers=1))
    for readers in (2, 3):
        parallel = list(extract_arrow(url, m, chunk_rows=100, readers=readers))
        assert len(parallel) > 1 and all(c.num_rows <= 100 for c in parallel)
        assert _rows(parallel) == _rows(sequential)
    ids = [r["id"] for r in _rows(sequential)]
    assert ids == sorted(ids) and ids[-1] == 1_000_000 and 777 not in ids


def test_range_reads_only_where_exact(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=500, products=5, orders=5, coupons=50, seed=2)
    assert integer_ranges(url, resolve_mapping("contacts"), 1000) is None  # too small to be worth it
    assert integer_ranges(url, resolve_mapping("coupons"), 10) is None  # a SQL source
    doc = resolve_mapping("contacts")
    by_email = type(doc)(**{**doc.__dict__, "order_by": ["email"]})
    assert integer_ranges(url, by_email, 10) is None  # ordered by something else than the primary key


def test_range_reader_errors_and_early_close(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=300, products=5, orders=5, seed=2)
    sqls = [f"SELECT id FROM customers WHERE id >= {a} AND id < {a + 50} ORDER BY id" for a in range(1, 301, 50)]
    reads = RangeReads(url, sqls, 10, 2)
    first = next(iter(reads))
    assert first.column("id").to_pylist() == list(range(1, 11))
    reads.close()  # stops both threads without reading the rest
    assert not [t for t in threading.enumerate() if t.name.startswith("connectif-sync-read")]
    with RangeReads(url, sqls, 10, 2):  # left before anything was read: the threads stop too
        pass
    assert not [t for t in threading.enumerate() if t.name.startswith("connectif-sync-read")]
    failing = RangeReads(url, [*sqls[:2], "SELECT id FROM nowhere"], 10, 2)
    with pytest.raises(Exception, match="no such table"):
        list(failing)
    failing.close()


def test_a_column_null_through_the_first_batch_then_text_is_read_whole(tmp_path: Path) -> None:
    """ADBC's SQLite driver types a column from a result's first batch: all NULL there means int64, and the
    first text value after it fails the read. Extraction resumes after the last row read instead."""
    db = tmp_path / "late.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, "
                             "updated_at TEXT)"))  # fmt: skip
        conn.execute(
            sa.text("INSERT INTO customers VALUES (:id, :email, :name, '2025-01-01 00:00:00')"),
            [
                {"id": i, "email": f"u{i}@x.com", "name": None if i < 50 or 90 < i < 150 else "Ann"}
                for i in range(1, 401)
            ],
        )
    engine.dispose()
    m = resolve_mapping("contacts")
    m = dataclasses.replace(m, fields={k: v for k, v in m.fields.items() if v.column in ("email", "first_name")})
    for readers in (1, 2):
        rows = _rows(list(extract_arrow(f"sqlite:///{db}", m, chunk_rows=20, readers=readers)))
        assert [r["id"] for r in rows] == list(range(1, 401)), readers
        assert [r["first_name"] for r in rows] == [None if i < 50 or 90 < i < 150 else "Ann" for i in range(1, 401)]
    result = run_sync("contacts", f"sqlite:///{db}", tmp_path / "out", state_url=f"sqlite:///{tmp_path / 's.db'}",
                      mapping=m, chunk_rows=20)  # fmt: skip
    assert result.report.sent == 400 and result.report.invalid == 0


def test_resume_queries() -> None:
    p = resolve_mapping("purchases")
    q = build_query(p, sqlite.dialect(), after=(17, "l-3"))
    assert q.endswith("WHERE (order_id, line_id) > (:cs_after0, :cs_after1) ORDER BY order_id, line_id")
    assert q.params == {"cs_after0": 17, "cs_after1": "l-3"}  # bound, never pasted into the text
    assert _bound(q, "qmark") == (q.replace(":cs_after0, :cs_after1", "?, ?"), [17, "l-3"])
    assert _bound(q, "dollar")[0].endswith("(order_id, line_id) > ($1, $2) ORDER BY order_id, line_id")
    c = resolve_mapping("contacts")
    q = build_query(c, postgresql.dialect(), after=(5,), id_range=(1, 9))
    assert q.endswith("WHERE id >= 1 AND id < 9 AND id > :cs_after0 ORDER BY id") and q.params == {"cs_after0": 5}
    # ConnectorX takes no parameters: MySQL's own escaping (a backslash is an escape there) renders them.
    keyed = build_query(c, mysql.dialect(), keys=["a\\", "o'neil"])
    assert _bound(keyed, "literal", mysql.dialect())[0].endswith("WHERE id IN ('a\\\\', 'o''neil') ORDER BY id")
