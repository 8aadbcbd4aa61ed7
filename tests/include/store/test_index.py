"""The SQLite state store's snapshot of hashes: always equal to the confirmed state (``state`` overlaid by the
blocks), whatever wrote it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, run_sync
from connectif_sync.store import snapshots_table
from connectif_sync.store.index import _read_snapshot


def _snapshot_matches_state(state: str) -> int:
    """Assert the snapshot holds exactly the confirmed (key_hash, row_hash, source_hash); return its size."""
    with StateStore(state) as store, store.engine.connect() as conn:
        snap = _read_snapshot(conn, "contacts")
        truth = store._merged_hashes(conn, "contacts")
        keys = store.confirmed("contacts")
    assert snap is not None
    assert np.array_equal(snap, truth)
    assert len(keys) == len(snap)
    return len(snap)


def test_snapshot_follows_confirmations_pending_lines_and_old_stores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=600, products=5, orders=5, coupons=0, seed=5, dirty_rate=0.0)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "run1", state_url=state, max_file_bytes=20_000)
    assert len(first.files) > 2
    with StateStore(state) as store:
        store.confirm_file(first.files[0].path, {3: "bad"})  # line 3 stays pending: not in state nor snapshot
        n0 = first.files[0].rows - 1
        assert _snapshot_matches_state(state) == n0
        for f in first.files[1:]:
            store.confirm_file(f.path)
        store.confirm_file(first.files[1].path)  # confirming twice is harmless
    assert _snapshot_matches_state(state) == first.report.sent - 1

    # A store written before snapshots existed (no snapshot row): rebuilt from state at the next confirmation.
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE customers SET last_name = last_name || 'x', updated_at = '2030-01-01' WHERE id < 40"
        )
    engine.dispose()
    with StateStore(state) as store, store.engine.begin() as conn:
        conn.execute(snapshots_table.delete())
    second = run_sync("contacts", url, tmp_path / "run2", state_url=state)  # full scan without snapshot: slow path
    r = second.report  # ids 1..39 changed; the pending line 3 goes again (new, or among the changed)
    assert r.new == 1 and r.changed + r.new in (39, 40) and r.sent == r.changed + r.new
    with StateStore(state) as store:
        for f in second.files:
            store.confirm_file(f.path)
    assert _snapshot_matches_state(state) == first.report.sent

    # The full scan through the snapshot finds nothing left to send.
    third = run_sync("contacts", url, tmp_path / "run3", state_url=state)
    assert third.report.sent == 0 and third.report.unchanged == first.report.sent


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_has_confirmed_tells_whether_there_are_confirmed_keys(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A full scan starts its probe's pages only when there is confirmed state to compare them with: none in
    a new store, nor after a run whose files are not confirmed yet; some once one is confirmed, also in a
    SQLite store without its snapshot (written before snapshots) and on PostgreSQL (the blocks)."""
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=300, products=5, orders=5, coupons=0, seed=5, dirty_rate=0.0)
    state = f"sqlite:///{tmp_path / 'state.db'}" if kind == "sqlite" else request.getfixturevalue("pg_database")
    with StateStore(state) as store:
        assert not store.has_confirmed("contacts")
    first = run_sync("contacts", url, tmp_path / "run1", state_url=state)
    with StateStore(state) as store:
        assert not store.has_confirmed("contacts")
        store.confirm_file(first.files[0].path)
        assert store.has_confirmed("contacts") and not store.has_confirmed("products")
        if kind == "sqlite":
            with store.engine.begin() as conn:
                conn.execute(snapshots_table.delete())
            assert store.has_confirmed("contacts")
