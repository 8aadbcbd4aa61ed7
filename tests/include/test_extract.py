"""Extraction: the exact SQL per dialect, streaming in bounded chunks, both paths, pandas frames."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from connectif_sync import Window, erp, extract, extract_arrow, resolve_mapping
from connectif_sync.extract import build_query, prefetch


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
        chunks = list(extract_arrow(url, m, chunk_rows=300, path=path))
        assert [c.num_rows for c in chunks] == [300, 300, 300, 100], path
        assert chunks[0].column("id").to_pylist()[:3] == [1, 2, 3]
    frames = list(extract(url, m, chunk_rows=400))
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
