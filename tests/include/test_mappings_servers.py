"""``check_source_columns`` on the database servers: the columns, kinds and primary key it reads in one
catalog query are what SQLAlchemy's reflection gives (the kinds decide the source hash's expression, so a
difference would make every stored hash stale), for every kind of column, domains, views, schemas,
mixed-case names and keys of several columns; and ``integer_ranges`` cuts ranges from that key alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from connectif_sync.extract import integer_ranges
from connectif_sync.mappings import MappingError, check_source_columns, load_mapping
from connectif_sync.sources import value_kind

PG_TYPES = """
CREATE SCHEMA erp;
CREATE DOMAIN erp.email AS varchar(200);
CREATE DOMAIN erp.work_email AS erp.email;
CREATE DOMAIN erp.stamp AS timestamptz;
CREATE TYPE erp.tier AS ENUM ('gold', 'silver');
CREATE TABLE erp."Kinds" (
    id bigint, part smallint, email varchar(400), note text, free varchar, code char(3),
    dom erp.email, dom2 erp.work_email, at_tz erp.stamp, born date, seen timestamp(3), at timestamptz(0),
    flag boolean, price numeric(10, 2), ratio double precision, tags text[], tier erp.tier, doc jsonb,
    uid uuid, raw bytea, span interval, hhmm time, counter serial, "MixedCase" integer,
    PRIMARY KEY (part, id)
);
CREATE VIEW erp.kinds_view AS SELECT id, email, seen FROM erp."Kinds";
CREATE TABLE plain (id integer PRIMARY KEY, email text);
CREATE TABLE nokey (id integer, email text);
"""

MYSQL_TYPES = """
CREATE TABLE kinds (
    id BIGINT, part SMALLINT, email VARCHAR(400), note TEXT, code CHAR(3), born DATE, seen DATETIME(3),
    at TIMESTAMP NULL, flag TINYINT(1), price DECIMAL(10, 2), ratio DOUBLE, big BIGINT UNSIGNED,
    zero INT(5) ZEROFILL, latin VARCHAR(20) CHARACTER SET latin1, doc JSON,
    PRIMARY KEY (part, id), UNIQUE KEY (email)
);
CREATE TABLE plain (id INT PRIMARY KEY, email TEXT);
CREATE TABLE nokey (id INT, email TEXT, UNIQUE KEY (id));
"""


def _mapping(tmp_path: Path, table: str, key: str = "id") -> Path:
    path = tmp_path / (table.replace(".", "_") + ".yaml")
    path.write_text(
        f"object: contacts\nsource: {{table: '{table}'}}\nkey: _email\norder_by: [{key}]\n"
        "fields:\n  _email: {column: email, type: email}\n",
        encoding="utf-8",
    )
    return path


def _reflected(url: str, table: str, schema: str | None) -> tuple[dict[str, object], tuple[str, ...]]:
    """SQLAlchemy's own kinds and primary key of a table."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        kinds = {c["name"].lower(): value_kind(c["type"]) for c in inspector.get_columns(table, schema=schema)}
        pk = tuple(inspector.get_pk_constraint(table, schema=schema).get("constrained_columns") or ())
    engine.dispose()
    return kinds, pk


def _run(url: str, script: str) -> None:
    """The statements of ``script`` (separated by semicolons), in one transaction."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for statement in script.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.mark.postgres
def test_postgres_kinds_and_keys_are_what_sqlalchemy_reflects(pg_database: str, tmp_path: Path) -> None:
    _run(pg_database, PG_TYPES)
    for table, schema, name, key in [
        ('erp."Kinds"', "erp", "Kinds", ("part", "id")),
        ("erp.kinds_view", "erp", "kinds_view", ()),
        ("plain", None, "plain", ("id",)),
        ("nokey", None, "nokey", ()),
    ]:
        m = check_source_columns(load_mapping(_mapping(tmp_path, table.replace('"', ""))), pg_database)
        kinds, pk = _reflected(pg_database, name, schema)
        assert m.source_kinds == kinds, table
        assert m.source_key == pk == key, table
        assert m.source_encoding == "UTF8"
    kinds = check_source_columns(load_mapping(_mapping(tmp_path, "erp.Kinds")), pg_database).source_kinds
    # The kinds the source hash tells apart (the rest is hashed as text; domains too, as SQLAlchemy reflects them):
    assert {c: kinds[c].value for c in ("id", "part", "counter", "mixedcase", "flag", "born")} == {
        "id": "integer", "part": "integer", "counter": "integer", "mixedcase": "integer", "flag": "boolean",
        "born": "date"}  # fmt: skip
    assert [kinds[c].value for c in ("seen", "at")] == ["timestamp", "timestamptz"]
    assert {kinds[c].value for c in ("email", "note", "free")} == {"text"}
    other = ("code", "price", "ratio", "tags", "tier", "doc", "uid", "raw", "span", "dom", "dom2", "at_tz")
    assert {kinds[c].value for c in other} == {"other"}
    with pytest.raises(MappingError, match="'nosuch' is not a table of the source database"):
        check_source_columns(load_mapping(_mapping(tmp_path, "nosuch")), pg_database)
    # integer_ranges takes the key from the mapping: a key of two columns, or none, cuts no ranges
    plain = check_source_columns(load_mapping(_mapping(tmp_path, "plain")), pg_database)
    assert integer_ranges(pg_database, plain, 10) is None  # an empty table: read in one go
    assert integer_ranges(pg_database, m, 10) is None


@pytest.mark.mysql
def test_mysql_keys_are_the_primary_key_in_its_order(mysql_database: str, tmp_path: Path) -> None:
    values = ", ".join(f"({i}, 'p{i}@example.com')" for i in range(1, 101))
    _run(mysql_database, f"{MYSQL_TYPES}; INSERT INTO plain VALUES {values}; INSERT INTO nokey SELECT * FROM plain")
    for table, key in [("kinds", ("part", "id")), ("plain", ("id",)), ("nokey", ())]:
        m = check_source_columns(load_mapping(_mapping(tmp_path, table)), mysql_database)
        assert m.source_key == _reflected(mysql_database, table, None)[1] == key, table
    plain = check_source_columns(load_mapping(_mapping(tmp_path, "plain")), mysql_database)
    ranges = integer_ranges(mysql_database, plain, 10)
    assert ranges is not None and ranges[0][0] == 1 and ranges[-1][1] > 100  # cut from the key the check read
    nokey = check_source_columns(load_mapping(_mapping(tmp_path, "nokey")), mysql_database)
    assert integer_ranges(mysql_database, nokey, 10) is None  # unique but not a primary key: read in one go
