"""Both extraction paths read the same rows from every database server: the Arrow-native reader (ADBC on
PostgreSQL, ConnectorX on MySQL) and SQLAlchemy."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

import sample_erp as erp
from connectif_sync import extract_arrow, resolve_mapping
from connectif_sync.extract import arrow_source


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
