"""Preparing a chunk (:mod:`connectif_sync.prepare`): rows whose source Connectif confirmed are skipped before
shaping, rows with bad bytes are set aside, the latest ``updated_at`` is kept as text."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa

from connectif_sync.diff import mapping_fingerprint, source_hashes
from connectif_sync.hashing import as_signed
from connectif_sync.mappings import resolve_mapping
from connectif_sync.prepare import chunk_high, later, prepare
from connectif_sync.state import StateIndex


def _customers(n: int) -> pa.Table:
    m = resolve_mapping("contacts", None)
    cols = {c: pa.array([None] * n, pa.string()) for c in m.source_columns()}
    cols["id"] = pa.array(range(1, n + 1))
    cols["email"] = pa.array([f"c{i}@x.com" for i in range(n)])
    cols["first_name"] = pa.array([f"Name{i}" for i in range(n)])
    cols["updated_at"] = pa.array([datetime(2025, 1, 1 + i) for i in range(n)], pa.timestamp("s"))
    return pa.table(cols)


def test_without_an_index_every_row_is_shaped() -> None:
    m = resolve_mapping("contacts", None)
    got = prepare(_customers(3), m, mapping_fingerprint(m), None)
    assert (got.rows, got.high, len(got.known_at), got.invalid) == (3, "2025-01-03 00:00:00", 0, 0)
    assert got.shaped is not None and got.shaped.num_rows == 3 and len(got.src) == 3


def test_rows_whose_source_was_confirmed_are_not_shaped() -> None:
    m = resolve_mapping("contacts", None)
    fp = mapping_fingerprint(m)
    table = _customers(4)
    src = as_signed(source_hashes(table, m, fp))
    # the state index knows rows 1 and 3 (at positions 0 and 1) by their source hash
    index = StateIndex(np.array([11, 22], np.int64), np.array([0, 0], np.int64), np.zeros(2, bool), src[[1, 3]])
    got = prepare(table, m, fp, index)
    assert got.known_at.tolist() == [0, 1] and got.rows == 4
    assert got.shaped is not None and got.shaped.source is not None
    assert got.shaped.source.column("email").to_pylist() == ["c0@x.com", "c2@x.com"]
    assert got.src.tolist() == src[[0, 2]].tolist()
    assert got.high == "2025-01-04 00:00:00"  # the skipped rows count for the watermark too
    everything = StateIndex(np.arange(4, dtype=np.int64), np.zeros(4, np.int64), np.zeros(4, bool), src)
    assert prepare(table, m, fp, everything).shaped is None


def test_bad_bytes_cost_their_row_only() -> None:
    m = resolve_mapping("contacts", None)
    table = _customers(2)
    table = table.set_column(
        table.column_names.index("first_name"), "first_name", pa.array([b"Ann", b"\xff"], pa.binary())
    )
    got = prepare(table, m, mapping_fingerprint(m), None)
    assert got.rows == 2 and got.invalid == 1 and [r.source_ref for r in got.rejected] == ["id=2"]
    assert got.shaped is not None and got.shaped.num_rows == 1


def test_high_water_marks() -> None:
    m = resolve_mapping("contacts", None)
    assert chunk_high(_customers(2).drop_columns(["updated_at"]), m) is None
    assert later(None, "2025-01-01") == "2025-01-01" and later("2025-02-01", None) == "2025-02-01"
    assert later("2025-02-01", "2025-01-01") == "2025-02-01"
