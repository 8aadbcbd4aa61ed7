"""Validate (rejects, duplicate rule), chunk (exact bytes, limits, manifests) and the row hash."""

from __future__ import annotations

import importlib
import itertools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from connectif_sync import ChunkWriter, KeySet, chunk, load_mapping, shape, validate
from connectif_sync.chunk import header_bytes, read_manifest, row_bytes

MAPPING = {
    "object": "contacts",
    "source": {"table": "people"},
    "key": "_email",
    "order_by": ["id"],
    "fields": {
        "_email": {"column": "email", "type": "email", "required": True},
        "_name": {"column": "name", "type": "string", "max_length": 5},
        "_points": {"column": "points", "type": "integer", "min": 0},
        "_birthdate": {"column": "born", "type": "date", "on_invalid": "empty"},
    },
}


@pytest.fixture
def mapping(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "people.yaml"
    path.write_text(yaml.safe_dump(MAPPING), encoding="utf-8")
    return load_mapping(path)


def _people() -> pa.Table:
    return pa.table(
        {
            "id": [1, 2, 3, 4, 5, 6, 7],
            "email": ["a@x.com", " A@X.com", None, "bad@", "b@x.com", "c@x.com", "b@x.com"],
            "name": ["Ann", "Ann2", "Bo", "Cy", "Toolong", "Di", "Ed"],
            "points": ["007", "1", "2", "3", "4", "-1", "5"],
            "born": ["1990-01-01", None, None, None, "bad", "2000-12-31", None],
        }
    )


def test_validate_rejects_with_key_field_reason_and_keeps_first_duplicate(mapping) -> None:  # type: ignore[no-untyped-def]
    seen = KeySet()
    v = validate(shape(_people(), mapping), mapping, seen)
    assert v.valid.to_pylist() == [
        {"_email": "a@x.com", "_name": "Ann", "_points": "7", "_birthdate": "1990-01-01"},
        {"_email": "b@x.com", "_name": "Ed", "_points": "5", "_birthdate": None},
    ]
    assert v.positions.tolist() == [0, 6]
    rejected = sorted((r.source_ref, r.field, r.reason, r.key, r.value) for r in v.rejected)
    assert rejected == [
        ("id=2", "_email", "duplicate key: an earlier row with the same key was kept", "a@x.com", " A@X.com"),
        ("id=3", "_email", "required field is empty", None, None),
        ("id=4", "_email", "invalid email address", "bad@", "bad@"),
        ("id=5", "_name", "longer than 5 characters", "b@x.com", "Toolong"),
        ("id=6", "_points", "below the minimum 0", "c@x.com", "-1"),
    ]
    assert (v.invalid_rows, v.duplicate_rows) == (4, 1)
    # id=5 (invalid) did not block id=7 (valid) of the same key; a later chunk sees earlier keys
    again = validate(shape(_people().slice(0, 1), mapping), mapping, seen)
    assert again.valid.num_rows == 0 and again.duplicate_rows == 1


def test_on_invalid_empty_keeps_the_row(mapping) -> None:  # type: ignore[no-untyped-def]
    table = pa.table({"id": [1], "email": ["z@x.com"], "name": ["Z"], "points": ["1"], "born": ["31/02/1990"]})
    v = validate(shape(table, mapping), mapping, KeySet())
    assert v.valid.to_pylist() == [{"_email": "z@x.com", "_name": "Z", "_points": "1", "_birthdate": None}]
    assert v.rejected == []


@pytest.fixture(params=["accelerated", "numpy"])
def keyset_search(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The KeySet tests run with the C table and with numpy's sorted runs (no C accelerator): same answers."""
    validate_module = importlib.import_module("connectif_sync.validate")  # the package's `validate` is the function
    if request.param == "accelerated":  # make install builds it; a missing build must fail, not skip
        assert validate_module.keyset_add is not None, "connectif_sync._hashing is not built: run `make install`"
    else:
        monkeypatch.setattr(validate_module, "keyset_add", None)


@pytest.mark.usefixtures("keyset_search")
def test_keyset_across_many_additions() -> None:
    ks = KeySet()
    rng = np.random.default_rng(1)
    all_keys = rng.integers(0, 2**63, size=50_000, dtype=np.uint64)
    first = ks.add_new(all_keys[:30_000])
    assert not first.any()
    dup = ks.add_new(np.concatenate([all_keys[20_000:], all_keys[49_999:]]))
    assert dup[:10_000].all() and not dup[10_000:30_000].any() and dup[30_000]
    assert len(ks) == 50_000


@pytest.mark.usefixtures("keyset_search")
def test_keyset_marks_every_occurrence_but_the_first_with_many_repeats() -> None:
    """Batches full of repeated keys (in any order) against a plain set: the first occurrence of a key, in
    the order given, is the new one; every later one, and every key of an earlier batch, is a repeat."""
    rng = np.random.default_rng(7)
    ks, seen = KeySet(), set()
    for size in (1, 2, 5_000, 20_000, 3, 40_000):
        batch = rng.integers(0, 3_000, size=size).astype(np.uint64)  # few distinct values: many repeats
        _add_as_a_set_would(ks, seen, batch)
    assert len(ks) == len(seen)


def _add_as_a_set_would(ks: KeySet, seen: set[int], batch: np.ndarray) -> None:
    """``ks.add_new(batch)`` marks as repeats exactly the keys a Python set has already seen."""
    expected = []
    for h in batch.tolist():
        expected.append(h in seen)
        seen.add(h)
    assert ks.add_new(batch).tolist() == expected


@pytest.mark.usefixtures("keyset_search")
def test_keyset_grows_through_many_batches_and_keeps_the_zero_key() -> None:
    """Keys added in batches of every size (the sorted runs merge many times) are each new once, whatever
    their value: 0 and the largest included."""
    rng = np.random.default_rng(11)
    ks, seen = KeySet(), set()
    for size in (0, 1, 7, 100, 1_000, 3_000, 30_000, 70_000, 5):
        batch = rng.integers(0, 2**64 - 1, size=size, dtype=np.uint64)
        batch[: size // 3] = rng.choice(np.array(sorted(seen) or [0], np.uint64), size // 3)  # a third repeats
        if size > 3:
            batch[1], batch[2], batch[3] = 0, 2**64 - 1, 0
        _add_as_a_set_would(ks, seen, batch)
        assert len(ks) == len(seen)
    assert ks.add_new(np.array(sorted(seen), np.uint64)).all()


def _manifest(keys: list[str]) -> pa.Table:
    n = len(keys)
    return pa.table({"line": [0] * n, "key": keys, "key_hash": list(range(n)), "row_hash": [7] * n,
                     "updated_at": [f"2024-01-0{i % 9 + 1} 00:00:00" for i in range(n)]})  # fmt: skip


def test_chunk_writes_exact_csv_and_manifest(tmp_path: Path) -> None:
    data = pa.table({"_email": ["a@x.com", "b@x.com", "c@x.com"], "_name": ['O"Brien, Jr.\nX', None, "Zoë"]})
    w = ChunkWriter(tmp_path, "contacts", ["_email", "_name"])
    assert not w.write(data, _manifest(["a@x.com", "b@x.com", "c@x.com"])).any()
    (f,) = w.close()
    text = Path(f.path).read_bytes()
    assert text == ('"_email","_name"\n"a@x.com","O""Brien, Jr.\nX"\n"b@x.com",\n"c@x.com","Zoë"\n').encode()
    assert f.bytes == len(text) and f.rows == 3 and Path(f.path).name == "contacts-0001.csv"
    assert row_bytes(data).sum() + header_bytes(["_email", "_name"]) == len(text)
    meta, manifest = read_manifest(f.path)
    assert meta == {"object": "contacts"}
    assert manifest.column("line").to_pylist() == [1, 2, 3]
    assert manifest.column("key").to_pylist() == ["a@x.com", "b@x.com", "c@x.com"]
    assert (f.min_updated_at, f.max_updated_at) == ("2024-01-01 00:00:00", "2024-01-03 00:00:00")


def test_chunk_limit_never_splits_rows_and_rejects_oversize(tmp_path: Path) -> None:
    names = [f"n{i}" * (i % 7 + 1) for i in range(200)] + ["W" * 500]
    keys = [f"k{i}@x.com" for i in range(201)]
    data = pa.table({"_email": keys, "_name": names})
    limit = 400
    w = ChunkWriter(tmp_path, "contacts", ["_email", "_name"], max_bytes=limit)
    big = w.write(data.slice(0, 120), _manifest(keys[:120]))
    big2 = w.write(data.slice(120), _manifest(keys[120:]))  # a file continues across writes
    files = w.close()
    assert not big.any() and big2.tolist() == [False] * 80 + [True]
    seen: list[str] = []
    for n, f in enumerate(files, 1):
        raw = Path(f.path).read_bytes()
        assert len(raw) == f.bytes <= limit
        assert raw.startswith(b'"_email","_name"\n') and Path(f.path).name == f"contacts-{n:04d}.csv"
        lines = raw.decode().splitlines()[1:]
        assert len(lines) == f.rows
        _, manifest = read_manifest(f.path)
        assert manifest.column("line").to_pylist() == list(range(1, f.rows + 1))
        assert [ln.split(",")[0].strip('"') for ln in lines] == manifest.column("key").to_pylist()
        seen.extend(manifest.column("key").to_pylist())
    assert seen == keys[:200]
    # the next file would not have had room for its first row
    for f, nxt in itertools.pairwise(files):
        first = Path(nxt.path).read_bytes().split(b"\n")[1]
        assert f.bytes + len(first) + 1 > limit


def test_chunk_files_are_written_by_a_thread_of_their_own_and_a_failed_write_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which rows go to which file is decided by the caller; the bytes are written by the writer's thread, in
    order, before :meth:`ChunkWriter.close` returns. A write that fails is raised there (or by the next write),
    never lost; :meth:`ChunkWriter.stop` (a run that failed otherwise) raises nothing."""
    threads: list[str] = []
    real = chunk._write_tables

    def noted(*args: Any) -> None:
        threads.append(threading.current_thread().name)
        real(*args)

    monkeypatch.setattr(chunk, "_write_tables", noted)
    keys = [f"k{i}@x.com" for i in range(60)]
    data = pa.table({"_email": keys, "_name": [f"n{i}" for i in range(60)]})
    w = ChunkWriter(tmp_path / "ok", "contacts", ["_email", "_name"], max_bytes=400)
    for start in range(0, 60, 10):
        w.write(data.slice(start, 10), _manifest(keys[start : start + 10]))
    files = w.close()
    assert set(threads) == {"connectif-sync-files"} and len(files) > 1
    written = [k for f in files for k in read_manifest(f.path)[1].column("key").to_pylist()]
    assert written == keys and all(Path(f.path).stat().st_size == f.bytes for f in files)

    def disk_full(*args: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(chunk, "_write_tables", disk_full)
    w = ChunkWriter(tmp_path / "full", "contacts", ["_email", "_name"])
    w.write(data, _manifest(keys))
    with pytest.raises(OSError, match="No space left"):
        w.close()
    w = ChunkWriter(tmp_path / "failed-run", "contacts", ["_email", "_name"])
    w.write(data, _manifest(keys))
    w.stop()


def test_chunk_partitions_and_dry_run(tmp_path: Path) -> None:
    data = pa.table({"code": ["A", "B", "C"]})
    w = ChunkWriter(tmp_path / "dry", "coupons", ["code"], dry_run=True)
    w.write(data, _manifest(["A", "B", "C"]), partition="set1")
    (f,) = w.close()
    assert f.bytes == len('"code"\n"A"\n"B"\n"C"\n') and not (tmp_path / "dry").exists()
    w = ChunkWriter(tmp_path, "coupons", ["code"])
    w.write(data.slice(0, 2), _manifest(["A", "B"]), partition="s/1")
    w.write(data.slice(2), _manifest(["C"]), partition="s2")
    files = w.close()
    assert sorted(Path(f.path).name for f in files) == ["coupons-s2-0001.csv", "coupons-s_1-0001.csv"]
    assert {f.partition for f in files} == {"s/1", "s2"}
    assert read_manifest(files[0].path)[0]["partition"] in {"s/1", "s2"}


def test_manifests_keep_the_sources_timestamps_and_their_text_where_it_is_needed(tmp_path: Path) -> None:
    """A naive timestamp ``updated_at`` is stored as read (no text per row); each file's first and last and the
    rows Connectif rejects get the same text as before (Arrow's cast, what ``shape.to_text`` writes), manifests
    of text still confirm, and a chunk whose ``updated_at`` is of another type starts a file of its own."""
    from connectif_sync import StateStore
    from connectif_sync.shape import to_text

    stamps = pa.array(["2024-03-01 10:00:00.250000", "2024-01-05 23:59:59", None], pa.string())
    native = stamps.cast(pa.timestamp("us"))
    data = pa.table({"_email": ["a@x.com", "b@x.com", "c@x.com"], "_name": ["A", "B", "C"]})
    keys = data.column("_email").to_pylist()
    w = ChunkWriter(tmp_path / "out", "contacts", ["_email", "_name"])
    w.write(data, _manifest(keys).set_column(4, "updated_at", native))
    w.write(data, _manifest(keys).set_column(4, "updated_at", native))  # the same file goes on
    w.write(data.slice(0, 1), _manifest(keys[:1]))  # text (e.g. SQLite's): a file of its own
    first, second = w.close()
    assert (first.rows, second.rows) == (6, 1)
    assert (first.min_updated_at, first.max_updated_at) == ("2024-01-05 23:59:59.000000", "2024-03-01 10:00:00.250000")
    assert [first.min_updated_at, first.max_updated_at] == to_text(native.take([1, 0])).to_pylist()
    assert read_manifest(first.path)[1].schema.field("updated_at").type == pa.timestamp("us")
    assert read_manifest(second.path)[1].schema.field("updated_at").type == pa.string()
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        done = store.confirm_file(first.path, {1: "bad email", 6: "bad email"})
        assert (done["confirmed"], done["failed"]) == (4, 2)
        assert {p["source_updated_at"] for p in store.pending("contacts")} == {"2024-03-01 10:00:00.250000", None}
        assert store.confirm_file(second.path)["confirmed"] == 1
