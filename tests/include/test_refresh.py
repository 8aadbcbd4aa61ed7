"""Source hashes refreshed: rows whose source changed but not their CSV are read whole by one full scan only,
and a refresh never overwrites a confirmation that landed since the scan read its rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, run_sync
from connectif_sync.hashing import as_signed, hash_strings
from connectif_sync.store.blocks import SCHEMA

pipeline = sys.modules["connectif_sync.pipeline"]  # the package exports a function of the same name


def _erp(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=400, products=5, orders=5, coupons=0, seed=11, dirty_rate=0.0)
    return url


def _confirmed_first_run(url: str, state: str, out: Path, chunk_rows: int) -> int:
    first = run_sync("contacts", url, out, state_url=state, chunk_rows=chunk_rows)
    with StateStore(state) as store:
        for f in first.files:
            store.confirm_file(f.path)
    return first.report.sent


@pytest.mark.parametrize("chunk_rows", [100, 32_768])  # ranges and the probe; one read of the whole table
def test_rows_whose_source_changed_but_not_their_csv_are_read_whole_by_one_full_scan(
    tmp_path: Path, chunk_rows: int, shaped_rows: list[int]
) -> None:
    url, state = _erp(tmp_path), f"sqlite:///{tmp_path / 'state.db'}"
    sent = _confirmed_first_run(url, state, tmp_path / "a", chunk_rows)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # every row's source changes; the CSV does not (emails are sent lower-cased)
        conn.execute(sa.text("UPDATE customers SET email = UPPER(email)"))
    engine.dispose()
    shaped = shaped_rows
    shaped.clear()  # the first run's
    second = run_sync("contacts", url, tmp_path / "b", state_url=state, chunk_rows=chunk_rows)
    r = second.report
    assert (r.sent, r.unchanged, r.refreshed, sum(shaped)) == (0, sent, sent, sent)
    assert not list((tmp_path / "b").glob(".*")), "the run's file of source hashes is removed"
    shaped.clear()
    third = run_sync("contacts", url, tmp_path / "c", state_url=state, chunk_rows=chunk_rows)
    r = third.report
    assert (r.sent, r.unchanged, r.refreshed, sum(shaped)) == (0, sent, 0, 0)  # known by their hash: none read whole
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a real change after the refresh is still found and sent
        conn.execute(sa.text("UPDATE customers SET last_name = 'Changed' WHERE id = 5"))
    engine.dispose()
    fourth = run_sync("contacts", url, tmp_path / "d", state_url=state, chunk_rows=chunk_rows)
    assert (fourth.report.changed, fourth.report.sent, fourth.report.refreshed) == (1, 1, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("pg_database"))


def test_a_refresh_stores_only_rows_still_confirmed_as_the_scan_saw_them(store_url: str, tmp_path: Path) -> None:
    """Compare-and-set: a row whose confirmed CSV changed since (a newer confirmation), a key not confirmed and
    a hash already stored are left as they are; the others get their new source hash, nothing else changes."""
    _confirmed_first_run(_erp(tmp_path), store_url, tmp_path / "a", 32_768)
    with StateStore(store_url) as store:
        before = store.load_index("contacts")
        assert before.source_hashes is not None
        pick = [3, 50, 120]
        kh = before.key_hashes[pick]
        rh, sh = before.row_hashes[pick], before.source_hashes[pick]
        keys = store.keys_for("contacts", kh.tolist())  # sorted: matched back to their hashes
        by_hash = dict(zip(as_signed(hash_strings(pa.array(keys))).tolist(), keys, strict=True))
        rows = pa.table(
            {
                "key": [by_hash[int(h)] for h in kh] + ["nobody@example.com"],
                "key_hash": [int(kh[0]), int(kh[1]), int(kh[2]), 12345],
                "row_hash": [int(rh[0]), int(rh[1]) + 1, int(rh[2]), 1],  # row 1: Connectif has another CSV now
                "source_hash": [777, 888, int(sh[2]), 999],  # row 2: already this hash
                "empty_mask": [0, 0, 0, 0],
            }
        ).cast(SCHEMA)
        assert store.refresh_source_hashes("contacts", rows) == 1
        after = store.load_index("contacts")
    assert after.source_hashes is not None
    assert np.array_equal(after.key_hashes, before.key_hashes) and np.array_equal(after.row_hashes, before.row_hashes)
    changed = np.flatnonzero(after.source_hashes != before.source_hashes).tolist()
    assert changed == [pick[0]] and int(after.source_hashes[pick[0]]) == 777


def _refreshed_once_then_probed(url: str, state: str, tmp_path: Path, sent: int, shaped: list[int]) -> None:
    """The next full scan reads every row whole and stores their new source hashes; the one after probes and
    reads none whole; neither sends anything (``shaped``: the ``shaped_rows`` fixture)."""
    shaped.clear()
    second = run_sync("contacts", url, tmp_path / "b", state_url=state, chunk_rows=100)
    assert (second.report.sent, second.report.refreshed, sum(shaped)) == (0, sent, sent)
    shaped.clear()
    third = run_sync("contacts", url, tmp_path / "c", state_url=state, chunk_rows=100)
    assert (third.report.sent, third.report.unchanged, third.report.refreshed, sum(shaped)) == (0, sent, 0, 0)


@pytest.mark.mysql
def test_a_store_hashed_with_md5_moves_to_mariadb_crcs_in_one_full_scan(
    mysql_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shaped_rows: list[int]
) -> None:
    """MariaDB 10.8+ hashes rows with CRC32C and CRC32, earlier versions (and MySQL) with MD5: a store whose
    rows were confirmed with MD5 hashes is read whole by one full scan, which stores the CRC hashes; the next
    full scan probes and reads nothing whole; nothing is sent either time."""
    erp.generate(mysql_database, contacts=400, products=5, orders=5, coupons=0, seed=11, dirty_rate=0.0)
    extract = sys.modules["connectif_sync.extract"]
    real = extract.source_dialect

    def md5(url: str) -> sa.Dialect:  # a dialect that never connected: MD5, as versions before hashed
        return sa.make_url(url).get_dialect()()

    for module in (extract, sys.modules["connectif_sync.probe"]):
        monkeypatch.setattr(module, "source_dialect", md5)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    sent = _confirmed_first_run(mysql_database, state, tmp_path / "a", 100)
    for module in (extract, sys.modules["connectif_sync.probe"]):
        monkeypatch.setattr(module, "source_dialect", real)
    assert extract.has_crc32c(real(mysql_database))
    _refreshed_once_then_probed(mysql_database, state, tmp_path, sent, shaped_rows)


def test_a_postgresql_store_hashed_as_text_moves_to_hashes_by_kind_in_one_full_scan(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shaped_rows: list[int]
) -> None:
    """PostgreSQL hashes each column by its kind of value (read from the table's columns); a store whose rows
    were confirmed with every column hashed as text (as when the kinds are unknown, or another version's
    hashes) is read whole by one full scan, which stores the new hashes; the next full scan probes and
    reads nothing whole; nothing is sent either time."""
    erp.generate(pg_database, contacts=400, products=5, orders=5, coupons=0, seed=11, dirty_rate=0.0)
    with monkeypatch.context() as mp:
        mp.setattr(pipeline, "check_source_columns", lambda mapping, url: mapping)  # no kinds: text hashes
        state = f"sqlite:///{tmp_path / 'state.db'}"
        sent = _confirmed_first_run(pg_database, state, tmp_path / "a", 100)
    _refreshed_once_then_probed(pg_database, state, tmp_path, sent, shaped_rows)
