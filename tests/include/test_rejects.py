"""Rejected rows (:mod:`connectif_sync.rejects`): counted by reason, stored in batches, sampled; the rows set
aside for bad UTF-8, suppression, duplicates and size each name their key, source row, field and fix."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from connectif_sync import rejects
from connectif_sync.contract import RejectedRow
from connectif_sync.mappings import resolve_mapping
from connectif_sync.rejects import (
    SUPPRESSED_REASON,
    Rejects,
    duplicate_row,
    oversize_rows,
    set_aside_bad_text,
    suppressed_row,
)
from connectif_sync.shape import BAD_UTF8_REASON
from connectif_sync.state import StateStore
from connectif_sync.validate import DUPLICATE_REASON


def _rows(n: int, reason: str = "bad") -> list[RejectedRow]:
    return [RejectedRow(f"k{i}", f"id={i}", "_email", reason, str(i)) for i in range(n)]


def test_rejects_count_sample_and_store_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rejects, "REJECTED_SAMPLE", 5)
    monkeypatch.setattr(rejects, "STORE_BATCH", 4)
    with StateStore(f"sqlite:///{tmp_path / 's.db'}") as store:
        run_id = store.begin_run("contacts", "full", None)
        r = Rejects(store, "contacts", run_id, dry_run=False)
        r.add(_rows(3))
        assert r._writes._thread is None  # no batch yet: no thread
        r.add(_rows(4, "worse"))  # the batch passes 4 rows: handed to the writing thread now
        r.add(iter(_rows(2)))  # any iterable; waits for the next batch or the end
        r.finish()
        assert store.count_rejected("contacts", run_id) == 9
        # stored in the order given, whichever thread wrote them
        assert [(x["key"], x["reason"]) for x in store.iter_rejected("contacts", run_id)] == [
            *((f"k{i}", "bad") for i in range(3)),
            *((f"k{i}", "worse") for i in range(4)),
            ("k0", "bad"),
            ("k1", "bad"),
        ]
        assert r.reasons == {"_email: bad": 5, "_email: worse": 4}
        assert [x["key"] for x in r.sample] == ["k0", "k1", "k2", "k0", "k1"]
        assert r.sample[0] == {"key": "k0", "source_ref": "id=0", "field": "_email", "reason": "bad", "value": "0"}
        r.stop()  # after finish: nothing left to do


def test_rejected_rows_are_written_by_their_own_thread_and_a_failed_write_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batches are stored by a thread of their own (the run's thread goes on with its chunks); a write
    that fails is raised by the run's next batch or at its end, never lost."""
    monkeypatch.setattr(rejects, "STORE_BATCH", 2)
    with StateStore(f"sqlite:///{tmp_path / 's.db'}") as store:
        run_id = store.begin_run("contacts", "full", None)
        writers: list[str] = []
        record = store.record_rejected

        def record_and_note(obj: str, run: str, rows: list[RejectedRow]) -> None:
            writers.append(threading.current_thread().name)
            record(obj, run, rows)

        monkeypatch.setattr(store, "record_rejected", record_and_note)
        r = Rejects(store, "contacts", run_id, dry_run=False)
        r.add(_rows(2))
        r.add(_rows(3))
        r.finish()
        assert writers == ["connectif-sync-rejects"] * 2 and store.count_rejected("contacts", run_id) == 5

        def disk_full(obj: str, run: str, rows: list[RejectedRow]) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(store, "record_rejected", disk_full)
        failing = Rejects(store, "contacts", run_id, dry_run=False)
        failing.add(_rows(2))
        with pytest.raises(OSError, match="disk full"):
            failing.finish()
        quiet = Rejects(store, "contacts", run_id, dry_run=False)
        quiet.add(_rows(2))
        quiet.stop()  # a run that failed otherwise: its own error is the one raised


def test_an_in_memory_store_is_written_by_the_runs_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread connecting to ``sqlite://`` would get an empty database of its own."""
    monkeypatch.setattr(rejects, "STORE_BATCH", 2)
    with StateStore("sqlite://") as store:
        assert store.in_memory
        run_id = store.begin_run("contacts", "full", None)
        r = Rejects(store, "contacts", run_id, dry_run=False)
        r.add(_rows(3))
        r.finish()
        assert store.count_rejected("contacts", run_id) == 3


def test_a_dry_run_counts_rejects_but_stores_none(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path / 's.db'}") as store:
        run_id = store.begin_run("contacts", "full", None)
        r = Rejects(store, "contacts", run_id, dry_run=True)
        r.add(_rows(6000))
        r.finish()
        assert store.count_rejected("contacts", run_id) == 0
        assert r.reasons == {"_email: bad": 6000} and len(r.sample) == rejects.REJECTED_SAMPLE


def test_suppressed_and_duplicate_rows_name_the_key_field() -> None:
    m = resolve_mapping("contacts", None)
    assert suppressed_row("a@x.com", "id=3", m, "erasure request id=7") == RejectedRow(
        "a@x.com", "id=3", "_email", SUPPRESSED_REASON, "erasure request id=7"
    )
    assert duplicate_row("a@x.com", m).as_dict() == {
        "key": "a@x.com", "source_ref": None, "field": "_email", "reason": DUPLICATE_REASON, "value": None,
    }  # fmt: skip


def test_oversize_rows_name_the_largest_field() -> None:
    data = pa.table({"_email": ["a@x.com", "b@x.com", "c@x.com"], "_name": ["Ann", "B" * 900, "C"]})
    keys = pa.array(["a@x.com", "b@x.com", "c@x.com"])
    got = oversize_rows(np.array([False, True, False]), keys, data, ["id=2"], np.array([20, 920, 15]), 500)
    assert got == [
        RejectedRow(
            "b@x.com",
            "id=2",
            "_name",
            "row larger than a whole import file may be (500 bytes with the header): shorten this field in the source",
            "the row takes 920 bytes in the CSV, this field 900",
        )
    ]


def test_bad_utf8_rows_are_set_aside_with_the_bytes_as_found() -> None:
    m = resolve_mapping("contacts", None)
    good = {c: pa.array(["x", "y"], pa.string()) for c in m.source_columns()}
    good["id"] = pa.array([1, 2])
    good["email"] = pa.array(["a@x.com", "b@x.com"])
    good["first_name"] = pa.array([b"Ann", b"B\xffb"], pa.binary())  # row id=2 has a stray byte
    table, rows, count = set_aside_bad_text(pa.table(good), m)
    assert count == 1 and table.column("email").to_pylist() == ["a@x.com"]
    assert rows == [RejectedRow("b@x.com", "id=2", "_name", BAD_UTF8_REASON, "B\\xffb")]
    clean, none, zero = set_aside_bad_text(table, m)
    assert (clean.num_rows, none, zero) == (1, [], 0)


def test_text_of_a_utf8_postgresql_source_is_not_checked_again_but_its_bytes_are() -> None:
    """PostgreSQL validates every text value of a UTF8 database: its string columns are not checked again
    (a string array holding stray bytes shows that no check ran); binary columns still are."""
    from dataclasses import replace

    m = resolve_mapping("contacts", None)
    cols = {c: pa.array(["x", "y"], pa.string()) for c in m.source_columns()}
    cols["id"] = pa.array([1, 2])
    cols["email"] = pa.array(["a@x.com", "b@x.com"])
    unchecked = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.py_buffer(np.array([0, 3, 6], np.int32)), pa.py_buffer(b"AnnB\xffb")]
    )
    table = pa.table({**cols, "first_name": unchecked})
    assert set_aside_bad_text(table, m)[2] == 1  # checked: the second row's name is set aside
    trusted = replace(m, source_encoding="UTF8")
    assert set_aside_bad_text(table, trusted)[2] == 0  # not checked again
    binary = pa.table({**cols, "first_name": pa.array([b"Ann", b"B\xffb"], pa.binary())})
    assert set_aside_bad_text(binary, trusted)[2] == 1  # bytes still are
