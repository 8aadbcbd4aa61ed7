"""Writing generated rows with the fastest path each database offers."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from sample_erp.rows import Columns, Rows

_ARROW_TYPES: dict[type, pa.DataType] = {
    sa.Integer: pa.int64(),
    sa.Boolean: pa.bool_(),
    sa.Numeric: pa.float64(),
}


def _arrow(table: sa.Table, data: Columns | Rows) -> pa.Table:
    """Columns (or row tuples in column order) as an Arrow table typed after the SQL table.

    Dates and timestamps stay ``YYYY-MM-DD[ HH:MM:SS]`` text: SQLite stores them so, PostgreSQL's COPY
    parses them, and SQLAlchemy reads them back as dates either way.
    """
    names = [c.name for c in table.columns]
    if isinstance(data, list):
        # No rows (e.g. ``erasures=0``) give no columns to transpose: every column is then empty.
        columns = [list(c) for c in zip(*data, strict=True)] if data else [[] for _ in names]
        data = dict(zip(names, columns, strict=True))
    fields = [pa.field(c.name, _ARROW_TYPES.get(type(c.type), pa.string())) for c in table.columns]
    return pa.table(
        [pa.array(data[name], type=f.type) for name, f in zip(names, fields, strict=True)], schema=pa.schema(fields)
    )


def _to_python(table: sa.Table, data: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts with Python dates, for the generic (SQLAlchemy ``insert``) path."""
    kinds = {c.name: type(c.type) for c in table.columns}
    out = data.to_pylist()
    for row in out:
        for name, v in row.items():
            if v is not None and kinds[name] is sa.DateTime:
                row[name] = datetime.strptime(v, "%Y-%m-%d %H:%M:%S")
            elif v is not None and kinds[name] is sa.Date:
                row[name] = datetime.strptime(v, "%Y-%m-%d").date()
    return out


class Writer:
    """Inserts batches with the fastest path the database offers.

    SQLite file: ADBC bulk ingest of Arrow data (a C loop, no per-row Python). PostgreSQL (psycopg2):
    ``COPY ... FROM STDIN`` of a CSV rendered by pyarrow, an order of magnitude faster than INSERTs.
    Anything else: SQLAlchemy's batched ``insert()`` executemany.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._adbc: Any = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            import adbc_driver_sqlite.dbapi

            self._adbc = adbc_driver_sqlite.dbapi.connect(url.database, autocommit=True)
            with self._adbc.cursor() as cur:
                # A generated file can be regenerated: trade durability for a several-fold faster load.
                cur.execute("PRAGMA synchronous=OFF")
                cur.execute("PRAGMA journal_mode=MEMORY")

    def write(self, table: sa.Table, data: Columns | Rows) -> None:
        arrow = _arrow(table, data)
        if arrow.num_rows == 0:
            return
        if self._adbc is not None:
            with self._adbc.cursor() as cur:
                cur.execute("BEGIN")
                cur.adbc_ingest(table.name, arrow, mode="append")
                cur.execute("COMMIT")
            return
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
                buf = io.BytesIO()
                pa_csv.write_csv(arrow, buf, pa_csv.WriteOptions(include_header=False))
                buf.seek(0)
                raw = conn.connection.driver_connection
                assert raw is not None
                cols = ",".join(arrow.column_names)
                with raw.cursor() as cur:
                    cur.copy_expert(f"COPY {table.name} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
            elif conn.dialect.name in ("mysql", "mariadb") and conn.dialect.driver == "pymysql":
                _load_data_mysql(conn, table, arrow)
            else:
                conn.execute(table.insert(), _to_python(table, arrow))

    def close(self) -> None:
        if self._adbc is not None:
            self._adbc.close()
            self._adbc = None


_MYSQL_NULL = "\x01N"  # stands for NULL in the LOAD DATA file (no generated value holds a control character)


def _load_data_mysql(conn: sa.Connection, table: sa.Table, arrow: pa.Table) -> None:
    """MySQL/MariaDB (PyMySQL): ``LOAD DATA LOCAL INFILE`` of a CSV rendered by pyarrow, ten times faster than
    INSERTs. Every value goes as text (booleans as 0/1), NULL as a marker that ``NULLIF`` turns back."""
    import os
    import tempfile

    cols = []
    for name in arrow.column_names:
        col = arrow.column(name)
        if pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        cols.append(pc.fill_null(pc.cast(col, pa.string()), _MYSQL_NULL))
    text = pa.table(cols, names=arrow.column_names)
    fd, path = tempfile.mkstemp(suffix=".csv", prefix="connectif-erp-")
    os.close(fd)
    try:
        pa_csv.write_csv(text, path, pa_csv.WriteOptions(include_header=False))
        names = arrow.column_names
        variables = ", ".join(f"@v{i}" for i in range(len(names)))
        sets = ", ".join(f"`{n}` = NULLIF(@v{i}, '{_MYSQL_NULL}')" for i, n in enumerate(names))
        conn.exec_driver_sql(
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table.name}` CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
            f"({variables}) SET {sets}"
        )
    finally:
        os.unlink(path)
