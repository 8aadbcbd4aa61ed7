"""The confirmed state kept as appended blocks: what every reader sees, over the rows of earlier versions,
through retries and compaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, run_sync
from connectif_sync.store import blocks, snapshots_table, state_blocks_table, state_table
from tests.fixtures.store import as_earlier_version


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_database"))


def _erp(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=400, products=5, orders=5, coupons=0, seed=11, dirty_rate=0.0)
    return url


def _change(url: str, where: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE customers SET last_name = last_name || 'x', updated_at = '2030-01-01' WHERE {where}"
        )
    engine.dispose()


def _seen(url: str) -> dict[str, Any]:
    """Everything the readers of the confirmed state answer for ``contacts``."""
    with StateStore(url) as store:
        index = store.load_index("contacts")
        some = index.key_hashes[::7]
        found, hashes = store.lookup("contacts", some)
        return {
            "confirmed": store.confirmed("contacts"),
            "count": store.count("contacts"),
            "index": (
                index.key_hashes.tolist(),
                index.row_hashes.tolist(),
                (index.source_hashes if index.source_hashes is not None else np.empty(0)).tolist(),
            ),
            "lookup": (found.tolist(), hashes.tolist()),
            "keys": store.keys_for("contacts", some.tolist()),
            "masks": store.empty_masks("contacts", some.tolist()),
        }


def _tables(url: str) -> tuple[int, int]:
    """``(state rows, blocks)`` of contacts."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).where(state_table.c.object == "contacts")).scalar_one()
        n = conn.execute(sa.select(sa.func.count()).where(state_blocks_table.c.object == "contacts")).scalar_one()
    engine.dispose()
    return int(rows), int(n)


def test_blocks_over_earlier_rows_retries_and_compaction(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 50)  # several blocks per file
    url = _erp(tmp_path)
    first = run_sync("contacts", url, tmp_path / "run1", state_url=store_url, max_file_bytes=15_000)
    assert len(first.files) > 1
    with StateStore(store_url) as store:
        for f in first.files:
            store.confirm_file(f.path)
    confirmed = _seen(store_url)
    assert confirmed["count"] == len(confirmed["confirmed"]) == first.report.sent
    assert all(confirmed["lookup"][0]) and len(confirmed["keys"]) == len(confirmed["lookup"][0])
    assert _tables(store_url)[0] == 0  # nothing written row by row

    with StateStore(store_url) as store:  # a retried confirmation appends the same rows: nothing changes
        store.confirm_file(first.files[0].path)
    assert _seen(store_url) == confirmed

    # A store of the previous version (rows in ``state``), then changed rows confirmed as blocks over them.
    assert as_earlier_version(store_url, "contacts") == first.report.sent
    assert _tables(store_url) == (first.report.sent, 0)
    if store_url.startswith("sqlite"):
        with StateStore(store_url) as store, store.engine.begin() as conn:
            conn.execute(snapshots_table.delete())  # and from before snapshots
    assert _seen(store_url) == confirmed
    _change(url, "id % 10 = 3")
    second = run_sync("contacts", url, tmp_path / "run2", state_url=store_url)
    assert 0 < second.report.sent == second.report.changed
    with StateStore(store_url) as store:
        for f in second.files:
            store.confirm_file(f.path)
    after = _seen(store_url)
    assert after["count"] == first.report.sent and after["confirmed"].keys() == confirmed["confirmed"].keys()
    differing = {k for k, h in after["confirmed"].items() if confirmed["confirmed"][k] != h}
    assert len(differing) == second.report.changed
    assert run_sync("contacts", url, tmp_path / "run3", state_url=store_url).report.sent == 0

    # Compaction: the earlier rows and every block become the fewest blocks; readers see the same.
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 1_000)
    monkeypatch.setattr(blocks, "COMPACT_BLOCKS", 1)
    with StateStore(store_url) as store:
        store.confirm_file(second.files[0].path)  # a retry, which triggers the compaction
    assert _tables(store_url) == (0, 1)
    assert _seen(store_url) == after


def test_a_read_only_store_of_an_earlier_version_reads_its_rows(tmp_path: Path) -> None:
    url = _erp(tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "run1", state_url=state)
    with StateStore(state) as store:
        for f in first.files:
            store.confirm_file(f.path)
    confirmed = _seen(state)
    as_earlier_version(state, "contacts")
    engine = sa.create_engine(state)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE connectif_sync_state_blocks")
        conn.exec_driver_sql("DROP TABLE connectif_sync_snapshots")
    engine.dispose()
    with StateStore(state, readonly=True) as store:
        assert store.confirmed("contacts") == confirmed["confirmed"]
        assert store.count("contacts") == confirmed["count"]
        index = store.load_index("contacts")
        assert index.key_hashes.tolist() == confirmed["index"][0]
        assert store.lookup("contacts", index.key_hashes[::7])[1].tolist() == confirmed["lookup"][1]
    assert not sa.inspect(sa.create_engine(state)).has_table("connectif_sync_state_blocks")  # read-only indeed


def test_latest_row_per_key_hash_wins() -> None:
    kh = np.array([5, 3, 5, 1, 3, 5], np.int64)
    layers = [np.stack([kh[:3], np.arange(3), np.zeros(3, np.int64)], axis=1),
              np.stack([kh[3:], np.arange(3, 6), np.zeros(3, np.int64)], axis=1)]  # fmt: skip
    merged = blocks.latest_hashes(layers)
    assert merged[:, 0].tolist() == [1, 3, 5] and merged[:, 1].tolist() == [3, 4, 5]


def _latest_as_a_dict_would(layers: list[np.ndarray]) -> list[list[int]]:
    latest: dict[int, list[int]] = {}
    for layer in layers:
        for row in layer.tolist():
            latest[row[0]] = row
    return [latest[k] for k in sorted(latest)]


@pytest.mark.parametrize("accelerated", [True, False])
def test_latest_hashes_over_a_snapshot_merges_the_newer_rows_as_a_full_sort_would(
    accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot (sorted by key hash, each key once) under newer layers takes the merge (in C, or numpy's
    without the accelerator): the same rows as sorting everything, a newer row winning over the snapshot's and
    over an earlier newer one; a first layer that is not sorted, or that repeats a key, takes the full sort."""
    if accelerated:  # make install builds it; a missing build must fail, not skip
        assert blocks.merge_latest is not None, "connectif_sync._hashing is not built: run `make install`"
    else:
        monkeypatch.setattr(blocks, "merge_latest", None)
    rng = np.random.default_rng(4)
    for trial in range(200):
        space = int(rng.integers(1, 500))
        layers = [rng.integers(-space, space, size=(int(rng.integers(0, 200)), 3)) for _ in range(rng.integers(1, 4))]
        for i, layer in enumerate(layers):
            layer[:, 1] = np.arange(len(layer)) + 1000 * i  # which layer and row each one comes from
        if trial % 3:  # the oldest layer is a snapshot
            layers[0] = np.array(_latest_as_a_dict_would(layers[:1]), np.int64).reshape(-1, 3)
        assert blocks.latest_hashes(layers).tolist() == _latest_as_a_dict_would(layers), trial


def test_blocks_written_with_the_updated_at_column_still_read(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of the version that still stored ``source_updated_at`` (one column more, before ``empty_mask``)
    read as before, alone and under blocks of this version, and survive compaction."""
    url = _erp(tmp_path)
    first = run_sync("contacts", url, tmp_path / "run1", state_url=store_url)
    old_schema = pa.schema([*list(blocks.SCHEMA)[:4], ("source_updated_at", pa.string()), blocks.SCHEMA.field(4)])

    def old_from_manifest(rows: pa.Table) -> pa.Table:
        return pa.table({f.name: rows.column("updated_at" if f.name == "source_updated_at" else f.name).cast(f.type)
                         for f in old_schema})  # fmt: skip

    with monkeypatch.context() as mp:  # confirmed by the previous version
        mp.setattr(blocks, "SCHEMA", old_schema)
        mp.setattr(blocks, "from_manifest", old_from_manifest)
        with StateStore(store_url) as store:
            for f in first.files:
                store.confirm_file(f.path)
    seen = _seen(store_url)
    assert seen["count"] == first.report.sent and all(seen["lookup"][0])
    with StateStore(store_url) as store:  # and again by this one: the same rows over the old blocks
        for f in first.files:
            store.confirm_file(f.path)
    assert _seen(store_url) == seen
    monkeypatch.setattr(blocks, "COMPACT_BLOCKS", 0)
    with StateStore(store_url) as store:
        store.confirm_file(first.files[0].path)  # compacts the old blocks and the new into this version's
    assert _tables(store_url)[1] == 1 and _seen(store_url) == seen
    assert run_sync("contacts", url, tmp_path / "run2", state_url=store_url).report.sent == 0


def test_the_c_merge_refuses_positions_outside_the_newer_rows_and_a_short_output() -> None:
    assert blocks.merge_latest is not None, "connectif_sync._hashing is not built: run `make install`"
    older, newer = np.array([[1, 2, 3]], np.int64), np.array([[4, 5, 6]], np.int64)
    with pytest.raises(ValueError, match="outside"):
        blocks.merge_latest(older, newer, np.array([1], np.int64), np.empty((2, 3), np.int64))
    with pytest.raises(ValueError, match="room"):
        blocks.merge_latest(older, newer, np.array([0], np.int64), np.empty((1, 3), np.int64))
    out = np.empty((2, 3), np.int64)
    assert blocks.merge_latest(older, newer, np.array([0], np.int64), out) == 2
    assert out.tolist() == [[1, 2, 3], [4, 5, 6]]
