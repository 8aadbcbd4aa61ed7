"""The sample ERP writes the same rows on every database server as on SQLite."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

import sample_erp as erp


def _rows(url: str, table: sa.Table) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]
    finally:
        engine.dispose()


def test_generator_writes_the_same_rows_as_on_sqlite(server_database: str, tmp_path: Path) -> None:
    lite = f"sqlite:///{tmp_path / 'erp.db'}"
    kwargs = {"contacts": 400, "products": 60, "orders": 80, "coupons": 40, "seed": 11, "dirty_rate": 0.1}
    a = erp.generate(server_database, **kwargs)  # type: ignore[arg-type]
    b = erp.generate(lite, **kwargs)  # type: ignore[arg-type]
    assert a.dirty == b.dirty and a.rows == b.rows
    for table in erp.TABLES:
        server_rows, lite_rows = _rows(server_database, table), _rows(lite, table)
        assert len(server_rows) == len(lite_rows), table.name
        assert [str(r) for r in server_rows] == [str(r) for r in lite_rows], table.name
