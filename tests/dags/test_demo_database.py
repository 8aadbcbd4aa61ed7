"""The demo's embedded PostgreSQL: its databases, stopped and started again with its data and its port."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from demo.__main__ import DATABASES, previous_port, start_database, stop_database_in
from localdb.postgres import running


def test_a_second_demo_finds_the_first_ones_databases_data_and_port(tmp_path: Path) -> None:
    root = tmp_path / "pg"
    first = start_database(root)
    try:
        engine = sa.create_engine(first.url("postgres"))
        with engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SELECT datname FROM pg_database")}
        engine.dispose()
        assert set(DATABASES) <= names
        erp = sa.create_engine(first.url("erp"))
        with erp.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE kept (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO kept VALUES (42)")
        erp.dispose()

        assert start_database(root).port == first.port  # still running: reused as it is
        first.stop()  # what Ctrl-C does
        assert running(root) is None
        assert previous_port(root) == first.port

        second = start_database(root)
        assert second.port == first.port  # the URLs the user saw stay valid
        erp = sa.create_engine(second.url("erp"))
        with erp.connect() as conn:
            assert conn.exec_driver_sql("SELECT x FROM kept").scalar() == 42
        erp.dispose()
    finally:
        stop_database_in(root)
    assert running(root) is None
