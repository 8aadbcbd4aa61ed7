"""Opening a store: the schema is checked and upgraded once, and a SQLite store at this schema skips it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from connectif_sync.state import StateStore
from connectif_sync.store import schema


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_store_at_this_schema_opens_without_checking_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.db"
    with StateStore(f"sqlite:///{path}"):
        pass
    assert _user_version(path) == schema.schema_mark() > 0

    def no_checks(*args: object, **kwargs: object) -> None:
        raise AssertionError("the schema was checked again")

    monkeypatch.setattr(schema.metadata, "create_all", no_checks)
    with StateStore(f"sqlite:///{path}") as store:  # the mark matches: nothing is inspected
        assert store.files("contacts") == []

    with sqlite3.connect(path) as conn:  # a store of another version (or from before the mark)
        conn.execute("PRAGMA user_version = 7")
    with pytest.raises(AssertionError, match="checked again"):
        StateStore(f"sqlite:///{path}")
    monkeypatch.undo()
    with StateStore(f"sqlite:///{path}"):
        pass
    assert _user_version(path) == schema.schema_mark()


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
