"""Opening a store: the schema is checked and upgraded once, and a store at this schema skips it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectif_sync.state import StateStore
from connectif_sync.store import schema
from tests.fixtures.store import clear_schema_mark


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    return str(request.getfixturevalue("pg_database"))


def _mark(url: str) -> int | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return schema._read_schema_mark(conn)
    finally:
        engine.dispose()


def test_a_store_at_this_schema_opens_without_checking_it(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with StateStore(url):
        pass
    assert _mark(url) == schema.schema_mark() > 0

    def no_checks(*args: object, **kwargs: object) -> None:
        raise AssertionError("the schema was checked again")

    monkeypatch.setattr(schema.metadata, "create_all", no_checks)
    with StateStore(url) as store:  # the mark matches: nothing is inspected
        assert store.files("contacts") == []

    clear_schema_mark(url)  # a store of an earlier version (or from before the mark)
    assert _mark(url) in (0, None)
    with pytest.raises(AssertionError, match="checked again"):
        StateStore(url)
    monkeypatch.undo()
    with StateStore(url):
        pass
    assert _mark(url) == schema.schema_mark()


def test_the_mark_follows_every_change_of_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    mark = schema.schema_mark()
    monkeypatch.setattr(schema, "RETIRED_INDEXES", {**schema.RETIRED_INDEXES, "connectif_sync_runs": ("ix_old",)})
    schema.schema_mark.cache_clear()
    try:
        assert schema.schema_mark() != mark
    finally:
        monkeypatch.undo()
        schema.schema_mark.cache_clear()
    assert schema.schema_mark() == mark


def test_the_mark_is_the_same_in_every_process() -> None:
    """Each process computes the mark from the definitions: a part that differed between processes (a
    memory address in a type's repr, say) would make every opening take the full path again."""
    code = "from connectif_sync.store.schema import schema_mark; print(schema_mark())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(other) == schema.schema_mark()


@pytest.mark.postgres
def test_a_role_that_does_not_own_the_tables_opens_the_store(pg_database: str) -> None:
    """A deployment may give the sync a role that writes the tables but does not own them: it cannot record
    the mark (PostgreSQL's comment needs the owner), and opens the store as before it, checking the schema."""
    with StateStore(pg_database):
        pass
    clear_schema_mark(pg_database)
    admin = sa.create_engine(pg_database)
    with admin.begin() as conn:
        conn.exec_driver_sql("DROP ROLE IF EXISTS connectif_sync_writer")
        conn.exec_driver_sql("CREATE ROLE connectif_sync_writer LOGIN")
        conn.exec_driver_sql("GRANT USAGE, CREATE ON SCHEMA public TO connectif_sync_writer")
        conn.exec_driver_sql(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO connectif_sync_writer"
        )
        conn.exec_driver_sql("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO connectif_sync_writer")
    writer = sa.make_url(pg_database).set(username="connectif_sync_writer").render_as_string(hide_password=False)
    try:
        for _ in range(2):
            with StateStore(writer) as store:
                assert store.files("contacts") == []
        assert _mark(pg_database) is None
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql("DROP OWNED BY connectif_sync_writer")
        sa.create_engine(pg_database).dispose()
        admin.dispose()
