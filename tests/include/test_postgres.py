"""The sync library on a real PostgreSQL server: state store, full run, command line. (The sample ERP and both
extraction paths on every server: ``tests/sample_erp/test_sample_erp_servers.py``, ``test_extract_servers.py``.)"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, run_sync
from connectif_sync.state import metadata as state_metadata

pytestmark = pytest.mark.postgres


def test_full_run_confirm_and_second_run_on_postgres(pg_database: str, postgres_url: str, tmp_path: Path) -> None:
    """Source and state store both on PostgreSQL; the output equals the same run on SQLite."""
    erp.generate(pg_database, contacts=500, products=40, orders=10, seed=5, dirty_rate=0.1)
    lite = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(lite, contacts=500, products=40, orders=10, seed=5, dirty_rate=0.1)
    state = pg_database
    pg_run = run_sync("contacts", pg_database, tmp_path / "pg", state_url=state)
    lite_run = run_sync("contacts", lite, tmp_path / "lite", state_url=f"sqlite:///{tmp_path / 'state.db'}")
    assert pg_run.report.sent == lite_run.report.sent > 0
    assert (tmp_path / "pg" / "contacts-0001.csv").read_bytes() == (
        tmp_path / "lite" / "contacts-0001.csv"
    ).read_bytes()
    with StateStore(state) as store:
        assert store.confirm_file(pg_run.files[0].path, {2: "_email: rejected"})["failed"] == 1
        assert len(store.pending("contacts")) == 1
        assert len(store.rejected("contacts")) == pg_run.report.invalid + pg_run.report.duplicate
    again = run_sync("contacts", pg_database, tmp_path / "pg2", state_url=state)
    assert again.report.sent == 1 and again.report.unchanged == pg_run.report.sent - 1
    first_sent = next(csv.DictReader((tmp_path / "pg" / "contacts-0001.csv").open(encoding="utf-8")))["_email"]
    with StateStore(state) as store:  # the suppression list on PostgreSQL
        assert store.suppress("contacts", [first_sent], "erasure request id=1") == 1
    third = run_sync("contacts", pg_database, tmp_path / "pg3", state_url=state)
    assert third.report.suppressed == 1 and third.report.unchanged == pg_run.report.sent - 2
    with StateStore(state) as store:
        assert store.unsuppress("contacts", [first_sent]) == 1 and store.suppressed("contacts") == []


def test_command_line_on_postgres(pg_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from connectif_sync.cli import main

    assert main(["sample-erp", "--url", pg_database, "--contacts", "200", "--products", "20", "--orders", "30"]) == 0
    capsys.readouterr()
    for obj in ("contacts", "products", "coupons"):
        assert main(["extract", "--object", obj, "--source", pg_database, "--state", pg_database,
                     "--out", str(tmp_path / obj)]) == 0  # fmt: skip
        doc = json.loads(capsys.readouterr().out)
        assert doc["report"]["sent"] == sum(f["rows"] for f in doc["files"]) > 0
        assert all(Path(f["path"]).is_file() for f in doc["files"])
    assert main(["plan", "--object", "purchases", "--source", pg_database, "--state", pg_database]) == 0
    plan = json.loads(capsys.readouterr().out)["report"]
    assert plan["sent"] > 0 and plan["api_requests"]["purchases"] == plan["sent"]


def test_state_store_created_by_several_workers_at_once(pg_database: str) -> None:
    """Workers opening a fresh store together all succeed (no UniqueViolation on pg_type) and see every table.

    Threads released by one barrier, each with its own engine already connected, so that their create_all
    calls overlap (without the lock this fails on most attempts); the lock is per database, as for processes.
    """
    import threading

    from connectif_sync import state as state_module

    n = 8
    engines = [sa.create_engine(pg_database) for _ in range(n)]
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def open_store(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            state_module._create_tables(engine)
            StateStore(pg_database).close()  # and the public path, now that the tables exist
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    try:
        for e in engines:
            with e.connect():
                pass
        threads = [threading.Thread(target=open_store, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for e in engines:
            e.dispose()
    assert errors == []
    with StateStore(pg_database) as store:
        tables = {n for n in sa.inspect(store.engine).get_table_names() if n.startswith("connectif_sync_")}
    assert tables == {t.name for t in state_metadata.sorted_tables}


def test_state_store_creation_retries_after_a_concurrent_creator(pg_database: str) -> None:
    """Without the advisory lock (another creator that does not take it), "already exists" is retried."""
    from connectif_sync import state as state_module

    engine = sa.create_engine(pg_database)
    calls: list[int] = []
    original = state_module.metadata.create_all

    def racing_create_all(bind: sa.Connection, **kw: object) -> None:
        calls.append(1)
        if len(calls) == 1:  # a concurrent worker creates the table between our check and our CREATE
            with engine.begin() as other:
                other.exec_driver_sql("CREATE TABLE connectif_sync_state (x int)")
            bind.exec_driver_sql("CREATE TABLE connectif_sync_state (x int)")
        original(bind, **kw)  # type: ignore[arg-type]

    try:
        state_module.metadata.create_all = racing_create_all  # type: ignore[method-assign]
        state_module._create_tables(engine)
    finally:
        state_module.metadata.create_all = original  # type: ignore[method-assign]
        engine.dispose()
    assert len(calls) == 2
