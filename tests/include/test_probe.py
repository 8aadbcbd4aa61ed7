"""The SQLite probe of a full scan: hashes computed by SQLite equal the full read's, and a probed second run
gives exactly what a run reading every value gives (reports, files, rejected rows)."""

from __future__ import annotations

import itertools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, pipeline, run_sync
from connectif_sync import probe as probing
from connectif_sync.diff import mapping_fingerprint, source_hashes
from connectif_sync.extract import (
    DEFAULT_READERS,
    PROBE_HASH_COLUMN,
    adbc_connect,
    build_query,
    probe_query,
    read_table,
    sqlite_hash_extension,
)
from connectif_sync.hashing import as_signed
from connectif_sync.mappings import resolve_mapping

pytestmark = pytest.mark.skipif(sqlite_hash_extension() is None, reason="connectif_sync._sqlite_hash not built")

SEED = 5


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[int]]:
    """The sample ERP, and the ids of its clean contacts."""
    path = tmp_path_factory.mktemp("erp") / "erp.db"
    summary = erp.generate(
        f"sqlite:///{path}", contacts=2000, products=50, orders=10, coupons=10, seed=SEED, dirty_rate=0.1
    )
    return path, set(range(1, 2001)) - set().union(*summary.dirty["customers"].values())


@pytest.fixture
def sample(generated: tuple[Path, set[int]]) -> Path:
    return generated[0]


def _copy(sample: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "erp.db"
    dst.write_bytes(sample.read_bytes())
    return dst


def _exec(db: Path, *sql: str) -> None:
    con = sqlite3.connect(db)
    with con:
        for s in sql:
            con.execute(s)
    con.close()


def _signed(fp: np.uint64) -> int:
    return int(np.array([fp], np.uint64).view(np.int64)[0])


def _both_hashes(db: Path) -> tuple[np.ndarray, pa.Array]:
    """The Arrow path's source hashes and SQLite's, per contact (in id order)."""
    url = f"sqlite:///{db}"
    m = resolve_mapping("contacts")
    fp = mapping_fingerprint(m)
    dialect = sa.make_url(url).get_dialect()()
    with adbc_connect(url, source_hash=True) as conn:
        full = read_table(conn, url, build_query(m, dialect), 100_000)
        probe = read_table(conn, url, probe_query(m, dialect, _signed(fp)), 100_000)
    assert probe.column("id").to_pylist() == full.column("id").to_pylist()
    return as_signed(source_hashes(full, m, fp)), probe.column(PROBE_HASH_COLUMN)


def test_sqlite_source_hash_equals_the_full_reads(sample: Path, tmp_path: Path) -> None:
    """Every kind of dirty value (unicode, quotes, delimiters, newlines, NULLs, leading zeros, over-long text)
    hashes alike in SQLite and through Arrow; a row with a REAL or BLOB value gets NULL (left to the full
    read)."""
    db = _copy(sample, tmp_path)
    _exec(
        db,
        "UPDATE customers SET newsletter_consent = 0.5 WHERE id = 3",
        "UPDATE customers SET first_name = X'414243' WHERE id = 4",
        "UPDATE customers SET first_name = NULL, last_name = '' WHERE id = 5",
        "UPDATE customers SET newsletter_consent = 7 WHERE id = 6",
    )
    arrow, probe = _both_hashes(db)
    assert probe.null_count == 2 and not probe[2].is_valid and not probe[3].is_valid
    keep = np.asarray(probe.is_valid().to_numpy(zero_copy_only=False), bool)
    got = np.asarray(probe.fill_null(0).to_numpy(), np.int64)
    assert (got[keep] == arrow[keep]).all()
    assert len(set(got[keep].tolist())) == keep.sum()  # and they differ from row to row


def _second_run(
    db: Path, state: Path, out: Path, probe: bool, monkeypatch: pytest.MonkeyPatch, mapping: Path | None = None,
    chunk_rows: int = 100,
) -> dict[str, Any]:  # fmt: skip
    """A full-scan run from a copy of the confirmed ``state``: report, files' bytes, stored rejected rows, and
    whether the probe read the source."""
    used: list[bool] = []
    real = probing.probe

    def spy(*a: Any, **k: Any) -> Any:
        chunks = real(*a, **k) if probe else None
        used.append(chunks is not None)
        return chunks

    copy = out.parent / f"{out.name}-state.db"
    copy.write_bytes(state.read_bytes())
    with monkeypatch.context() as mp:
        mp.setattr(probing, "probe", spy)
        result = run_sync(
            "contacts", f"sqlite:///{db}", out, state_url=f"sqlite:///{copy}", chunk_rows=chunk_rows, mapping=mapping
        )
    report = {k: v for k, v in result.report.as_dict().items() if k not in ("run_id", "duration_s")}
    with StateStore(f"sqlite:///{copy}") as store:
        rejected = sorted(
            (r["key"] or "", r["source_ref"] or "", r["field"], r["reason"], r["value"] or "")
            for r in store.rejected("contacts", limit=100_000)
        )
    files = [(Path(f.path).name, Path(f.path).read_bytes()) for f in result.files]
    return {"report": report, "files": files, "rejected": rejected, "probed": used == [True]}


def _rows_read(monkeypatch: pytest.MonkeyPatch, reader: str) -> list[int]:
    """The number of rows of each table the probe's ``reader`` (``read_rows``, ``read_table``) returns, from now."""
    counts: list[int] = []
    real = getattr(probing, reader)

    def counting(*a: Any, **k: Any) -> pa.Table:
        table = real(*a, **k)
        counts.append(table.num_rows)
        return table

    monkeypatch.setattr(probing, reader, counting)
    return counts


def _confirmed(db: Path, tmp_path: Path, mapping: Path | None = None, chunk_rows: int = 100) -> Path:
    state = tmp_path / "state.db"
    first = run_sync(
        "contacts", f"sqlite:///{db}", tmp_path / "first", state_url=f"sqlite:///{state}", chunk_rows=chunk_rows,
        mapping=mapping,
    )  # fmt: skip
    with StateStore(f"sqlite:///{state}") as store:
        for f in first.files:
            store.confirm_file(f.path)
    return state


def test_probed_full_scan_gives_what_a_full_read_gives(
    generated: tuple[Path, set[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed, new, deleted, duplicate and invalid rows among every kind of dirty data: the same report,
    files and rejected rows with and without the probe."""
    sample, clean = generated
    db = _copy(sample, tmp_path)
    state = _confirmed(db, tmp_path)
    moved = sorted(i for i in clean if i % 50 == 7)
    invalid, gone, twin, gone2, touched = (sorted(clean - set(moved))[k] for k in (300, 10, 20, 1400, 500))
    _exec(
        db,
        "UPDATE customers SET last_name = 'Moved', updated_at = '2026-02-01 00:00:00' WHERE id % 50 = 7",
        f"UPDATE customers SET updated_at = '2026-03-01 00:00:00' WHERE id = {touched}",  # the latest: unchanged
        f"UPDATE customers SET email = 'not an email' WHERE id = {invalid}",
        f"DELETE FROM customers WHERE id IN ({gone}, {gone2})",
        "INSERT INTO customers (id, customer_code, email, first_name, created_at, updated_at) SELECT 5000, "
        f"'X', email, 'Twin', created_at, updated_at FROM customers WHERE id = {twin}",
        "INSERT INTO customers (id, customer_code, email, first_name, created_at, updated_at) "
        "VALUES (5001, 'Y', 'new.one@example.com', 'New', '2025-01-01', '2025-01-01')",
    )
    probed = _second_run(db, state, tmp_path / "probed", True, monkeypatch)
    full = _second_run(db, state, tmp_path / "full", False, monkeypatch)
    assert probed["probed"] and not full["probed"]
    assert probed["report"] == full["report"]
    r = probed["report"]
    assert (r["changed"], r["new"], r["deleted"], r["sent"]) == (len(moved), 1, 3, len(moved) + 1)
    assert r["high_water"] == "2026-03-01 00:00:00"  # a row the probe found unchanged still counts
    assert probed["files"] == full["files"]
    assert probed["rejected"] == full["rejected"]
    assert any(x[1] == "id=5000" and x[3].startswith("duplicate key") for x in probed["rejected"])
    assert any(x[1] == f"id={invalid}" and x[3] == "invalid email address" for x in probed["rejected"])


PEOPLE = """
object: contacts
source: {table: people}
key: _email
order_by: [id]
updated_at: updated_at
fields:
  _email: {column: email, type: email, required: true}
  _points: {column: points, type: integer, min: 0}
"""


def test_rows_with_real_values_are_found_by_their_full_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite leaves REAL values to the full read (its text of them may differ from Arrow's): such rows are
    read in full by key and found unchanged by their Arrow hash, in chunks that are otherwise probed."""
    db = tmp_path / "people.db"
    _exec(
        db,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, points, updated_at TEXT)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
        "INSERT INTO people SELECT i, 'p' || i || '@example.com', "
        "CASE WHEN i % 10 = 0 THEN i * 1.0 ELSE i END, '2025-01-01 00:00:00' FROM n",
    )
    mapping = tmp_path / "people.yaml"
    mapping.write_text(PEOPLE, encoding="utf-8")
    state = _confirmed(db, tmp_path, mapping)
    _exec(db, "UPDATE people SET points = points + 1, updated_at = '2025-06-01 00:00:00' WHERE id % 100 IN (5, 20)")
    probed = _second_run(db, state, tmp_path / "probed", True, monkeypatch, mapping)
    full = _second_run(db, state, tmp_path / "full", False, monkeypatch, mapping)
    assert probed["probed"] and probed["report"] == full["report"] and probed["files"] == full["files"]
    assert (probed["report"]["changed"], probed["report"]["unchanged"]) == (60, 2940)
    body = probed["files"][0][1].decode()
    assert '"p20@example.com","21"' in body and '"p5@example.com","6"' in body


def test_probe_stands_aside_when_it_would_not_pay(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most rows unconfirmed in the first range (here: every name changed): the scan reads every value."""
    db = _copy(sample, tmp_path)
    state = _confirmed(db, tmp_path)
    _exec(db, "UPDATE customers SET first_name = first_name || '!' WHERE first_name IS NOT NULL")
    run = _second_run(db, state, tmp_path / "b", True, monkeypatch)
    assert not run["probed"]
    assert run["report"]["changed"] > 1500 and run["report"]["unchanged"] < 200
    # The pages were being read while the first range was checked: their readers stopped with the probe.
    assert not [t.name for t in threading.enumerate() if t.name.startswith("connectif-sync-read")]


def test_the_high_water_mark_is_read_before_any_page(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe reads the latest ``updated_at`` before its pages start (they start while it checks the first
    range): a row updated after its page was read then has a later time than the mark, so the next
    incremental run reads it again; a mark read after some pages could pass it by."""
    db = _copy(sample, tmp_path)
    state = _confirmed(db, tmp_path)
    _exec(db, "UPDATE customers SET last_name = 'Moved', updated_at = '2026-02-01 00:00:00' WHERE id % 50 = 7")
    events: list[str] = []
    real_latest, real_reads = probing._latest_update, probing.RangeReads

    def latest(*a: Any, **k: Any) -> Any:
        events.append("high-water mark")
        return real_latest(*a, **k)

    def reads(*a: Any, **k: Any) -> Any:
        events.append("pages")
        return real_reads(*a, **k)

    monkeypatch.setattr(probing, "_latest_update", latest)
    monkeypatch.setattr(probing, "RangeReads", reads)
    run = _second_run(db, state, tmp_path / "b", True, monkeypatch)
    assert run["probed"] and events == ["high-water mark", "pages"]
    assert run["report"]["high_water"] == "2026-02-01 00:00:00"


def test_a_mostly_changed_page_is_read_whole_a_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe page (PROBE_SPAN chunks) where most rows changed is read in full by key ranges of at most one
    chunk each (memory stays that of a chunk), and gives what a full read gives; the other pages are probed."""
    db = tmp_path / "people.db"
    _exec(
        db,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, points INTEGER, updated_at TEXT)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
        "INSERT INTO people SELECT i, 'p' || i || '@example.com', i, '2025-01-01 00:00:00' FROM n",
    )
    mapping = tmp_path / "people.yaml"
    mapping.write_text(PEOPLE, encoding="utf-8")
    state = _confirmed(db, tmp_path, mapping)
    # chunk_rows=100 in these runs: 30 ranges of 100 ids, read as pages of at most PROBE_SPAN ranges
    pages = probing.probe_pages([(i * 100 + 1, i * 100 + 101) for i in range(30)], probing.PROBE_READERS)
    assert all(hi - lo <= probing.PROBE_SPAN * 100 for lo, hi in pages)
    lo, hi = pages[1]
    page = hi - lo
    _exec(db, f"UPDATE people SET points = points + 1 WHERE id >= {lo} AND id < {hi} AND id % 5 IN (1, 2, 3)")
    reads = _rows_read(monkeypatch, "read_rows")
    probed = _second_run(db, state, tmp_path / "probed", True, monkeypatch, mapping)
    full = _second_run(db, state, tmp_path / "full", False, monkeypatch, mapping)
    assert probed["probed"] and probed["report"] == full["report"] and probed["files"] == full["files"]
    changed = 3 * page // 5
    assert (probed["report"]["changed"], probed["report"]["unchanged"]) == (changed, 3000 - changed)
    assert max(reads) == 100 and sum(reads) == page  # the changed page, read whole, a chunk at a time


@pytest.mark.parametrize("readers", [1, 2, 3])
def test_probe_pages_share_the_ranges_evenly_between_readers(readers: int) -> None:
    """Pages cover the ranges in order, hold at most PROBE_SPAN of them, and page i goes to reader
    i % readers: every reader reads the same number of ranges, give or take one per page (34 ranges cut every
    8 gave one of two readers 18 and the other 16)."""
    assert probing.probe_pages([], readers) == []
    for n in range(1, 120):
        ranges = [(10 * i, 10 * i + 10) for i in range(n)]
        pages = probing.probe_pages(ranges, readers)
        assert pages[0][0] == 0 and pages[-1][1] == 10 * n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pages))
        sizes = [(hi - lo) // 10 for lo, hi in pages]
        assert max(sizes) <= probing.PROBE_SPAN and max(sizes) - min(sizes) <= 1
        per_reader = [sum(sizes[r::readers]) for r in range(readers)]
        assert len(pages) % readers == 0 or len(pages) == n
        assert max(per_reader) - min(per_reader) <= -(-len(pages) // readers)
    assert [(hi - lo) // 10 for lo, hi in probing.probe_pages([(10 * i, 10 * i + 10) for i in range(34)], 2)] == [
        5, 6, 6, 5, 6, 6]  # fmt: skip


def test_a_full_scan_starts_its_pages_before_it_loads_the_confirmed_state(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database reads the probe's pages while the confirmed state loads (a full scan's serial start); a
    first run, with no confirmed state to compare with, starts none; a state that fails to load stops them."""
    db = _copy(sample, tmp_path)
    events: list[str] = []
    real_reads, real_load = probing.RangeReads, StateStore.load_index

    def reads(*a: Any, **k: Any) -> Any:
        events.append("pages")
        return real_reads(*a, **k)

    def load(self: StateStore, obj: str) -> Any:
        events.append("state")
        return real_load(self, obj)

    monkeypatch.setattr(probing, "RangeReads", reads)
    monkeypatch.setattr(StateStore, "load_index", load)
    state = _confirmed(db, tmp_path)
    assert events == ["state"]  # the first run: no pages
    events.clear()
    _exec(db, "UPDATE customers SET last_name = 'Moved' WHERE id % 50 = 7")
    run = _second_run(db, state, tmp_path / "b", True, monkeypatch)
    assert run["probed"] and events == ["pages", "state"]
    assert run["report"]["changed"] == 40

    def broken(self: StateStore, obj: str) -> Any:
        raise OSError("disk gone")

    monkeypatch.setattr(StateStore, "load_index", broken)
    with pytest.raises(OSError, match="disk gone"):
        run_sync("contacts", f"sqlite:///{db}", tmp_path / "c", state_url=f"sqlite:///{state}", chunk_rows=100)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("connectif-sync-read")]


def test_a_probe_reads_with_one_connection_more_than_a_full_read_unless_told(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a full read uses DEFAULT_READERS connections and a probe PROBE_READERS (its pages hold keys
    and hashes, not rows); ``readers`` given, both use it."""
    db = _copy(sample, tmp_path)
    started: list[int] = []
    reads: list[int] = []
    real_start, real_reads = probing.start, pipeline.extract_arrow

    def start(*a: Any) -> Any:
        started.append(a[-1])
        return real_start(*a)

    def extract(*a: Any, **k: Any) -> Any:
        reads.append(k["readers"])
        return real_reads(*a, **k)

    monkeypatch.setattr(probing, "start", start)
    monkeypatch.setattr(pipeline, "extract_arrow", extract)
    state = _confirmed(db, tmp_path)
    assert reads == [DEFAULT_READERS] and started == []
    _exec(db, "UPDATE customers SET last_name = 'Moved' WHERE id % 50 = 7")
    assert _second_run(db, state, tmp_path / "b", True, monkeypatch)["probed"]
    assert started == [probing.PROBE_READERS] == [DEFAULT_READERS + 1]
    started.clear()
    copy = tmp_path / "told-state.db"
    copy.write_bytes(state.read_bytes())
    run_sync("contacts", f"sqlite:///{db}", tmp_path / "c", state_url=f"sqlite:///{copy}", chunk_rows=100, readers=2)
    assert started == [2]


def test_the_probe_decides_on_the_start_of_the_first_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision reads the first 1/PROBE_SAMPLE of the first range's keys, not the range (which its page
    reads again), and a start that misleads costs time, not rows: here every row after it changed, the probe
    is used, reads the changed pages whole, and gives what a full read gives. With keys too sparse for the
    sample to hold PROBE_SAMPLE_MIN_ROWS rows, the whole first range decides (the other tests: 100-row chunks)."""
    db = tmp_path / "people.db"
    rows, chunk = 20_000, 5_000  # SQLite counts the rows: 4 ranges of 5,000 ids, a sample of 312
    _exec(
        db,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, points INTEGER, updated_at TEXT)",
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
        "INSERT INTO people SELECT i, 'p' || i || '@example.com', i, '2025-01-01 00:00:00' FROM n",
    )
    mapping = tmp_path / "people.yaml"
    mapping.write_text(PEOPLE, encoding="utf-8")
    state = _confirmed(db, tmp_path, mapping, chunk_rows=chunk)
    sample = (rows // (rows // chunk)) // probing.PROBE_SAMPLE
    assert sample >= probing.PROBE_SAMPLE_MIN_ROWS
    _exec(db, f"UPDATE people SET points = points + 1 WHERE id > {sample}")
    decisions = _rows_read(monkeypatch, "read_table")
    probed = _second_run(db, state, tmp_path / "probed", True, monkeypatch, mapping, chunk_rows=chunk)
    assert probed["probed"] and sample in decisions and max(decisions) < chunk  # the high-water mark: one row
    full = _second_run(db, state, tmp_path / "full", False, monkeypatch, mapping, chunk_rows=chunk)
    assert probed["report"] == full["report"] and probed["files"] == full["files"]
    assert (probed["report"]["changed"], probed["report"]["unchanged"]) == (rows - sample, sample)
