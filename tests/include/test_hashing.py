"""The row hash: the C accelerator, the numpy fallback and the documented definition agree exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from connectif_sync import hashing
from connectif_sync.chunk import row_bytes
from connectif_sync.hashing import hash_columns, hash_csv_rows, hash_strings, join_columns, numpy_hash_strings

needs_c = pytest.mark.skipif(not hashing.ACCELERATED, reason="C accelerator not built (no compiler)")


def reference(value: str) -> int:
    """The documented hash in plain Python: sum((byte+1) * P^i) mod 2^64, xor length, splitmix64."""
    p, m = 0x100000001B3, 2**64
    h, pw = 0, 1
    for b in value.encode():
        h = (h + (b + 1) * pw) % m
        pw = pw * p % m
    h ^= (len(value.encode()) * 0x9E3779B97F4A7C15) % m
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) % m
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) % m
    return h ^ (h >> 31)


# Lengths around the accelerator's eight-byte steps, multi-byte UTF-8, quotes, separators, nulls.
VALUES = ["", "a", "abcdefg", "abcdefgh", "abcdefghi", "x" * 5000, "Zoë 李 🎉" * 3, 'q"u,o\nte', "\x1f", None]


@pytest.fixture(params=["c", "numpy"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "c" and not hashing.ACCELERATED:
        pytest.skip("C accelerator not built (no compiler)")
    if request.param == "numpy":
        monkeypatch.setattr(hashing, "_c", None)
    return str(request.param)


def test_single_column_matches_the_definition(path: str) -> None:
    arr = pa.array(VALUES)
    assert hash_strings(arr).tolist() == [reference(v or "") for v in VALUES]
    assert hash_strings(arr.slice(3, 4)).tolist() == [reference(v or "") for v in VALUES[3:7]]
    assert hash_strings(pa.array(VALUES, pa.large_string())).tolist() == hash_strings(arr).tolist()
    assert hash_strings(pa.chunked_array([arr.slice(0, 2), arr.slice(2)])).tolist() == hash_strings(arr).tolist()
    assert hash_strings(pa.array([12, None, -3])).tolist() == [reference("12"), reference(""), reference("-3")]
    assert hash_strings(pa.array([], pa.string())).tolist() == []
    assert hash_strings(pa.nulls(2)).tolist() == [reference("")] * 2
    big = pa.array(["y" * 1_100_000, "z"])  # longer than one numpy hashing segment
    assert hash_strings(big).tolist() == [reference("y" * 1_100_000), reference("z")]


def test_columns_hash_as_their_joined_row(path: str) -> None:
    a = pa.array(["a", None, "", "abcdefghij", 'x"'])
    b = pa.array(["zzzzzzzzz", "c", None, "", "y"]).slice(0)
    c = pa.array(["0", "1", "2", "3", "4", "5"]).slice(1)  # an offset into its buffers
    expected = [reference(v) for v in join_columns([a, b, c]).to_pylist()]
    assert hash_columns([a, b, c]).tolist() == expected
    hashes, sizes = hash_csv_rows([a, b, c])
    assert hashes.tolist() == expected
    assert sizes.tolist() == row_bytes(pa.table({"a": a, "b": b, "c": c})).tolist()


@needs_c
def test_accelerator_equals_numpy_on_random_text() -> None:
    rng = np.random.default_rng(7)
    alphabet = list('abcXYZ019 ,"\n\x1féü李🎉')
    values = ["".join(rng.choice(alphabet, size=int(n))) for n in rng.integers(0, 40, size=3000)]
    arr = pa.array([v if i % 17 else None for i, v in enumerate(values)])
    assert (hash_strings(arr) == numpy_hash_strings(arr)).all()
    cols = [arr, arr.slice(1).take(pa.array(np.arange(2999))).cast(pa.large_string()), pa.array(values[::-1])]
    cols = [c.slice(0, 2999) for c in cols]
    assert (hash_columns(cols) == numpy_hash_strings(join_columns([c.cast(pa.string()) for c in cols]))).all()


@needs_c
def test_accelerator_refuses_bad_buffers_instead_of_reading_past_them() -> None:
    c = hashing._c
    assert c is not None
    out = np.empty(5, np.uint64)
    with pytest.raises(ValueError, match="offsets buffer too short"):
        c.hash_rows([(b"\0" * 8, b"", None, 0, False)], 5, out)
    with pytest.raises(ValueError, match="outside the data buffer"):
        c.hash_rows([(np.array([0, 100], np.int32).tobytes(), b"abc", None, 0, False)], 1, out)
    with pytest.raises(ValueError, match="validity buffer too short"):
        c.hash_rows([(np.zeros(20, np.int32).tobytes(), b"", b"", 0, False)], 9, np.empty(9, np.uint64))
    with pytest.raises(ValueError, match="out must hold"):
        c.hash_rows([], 5, np.empty(2, np.uint64))
    with pytest.raises(ValueError, match="different lengths"):
        hash_columns([pa.array(["a"]), pa.array(["a", "b"])])


@pytest.mark.parametrize("accelerated", [True, False])
def test_position_index_finds_the_first_position_of_each_key(
    accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash table (C) and the sorted fallback give the same answers: the first position of a repeated
    key, 0 never found, absent needles not found (position 0)."""
    if accelerated:  # make install builds it; a missing build must fail, not skip
        assert hashing.ACCELERATED, "connectif_sync._hashing is not built: run `make install`"
    if not accelerated:
        monkeypatch.setattr(hashing, "_c", None)
    rng = np.random.default_rng(3)
    keys = rng.integers(-(2**63), 2**63 - 1, 50_000, dtype=np.int64)
    keys[10], keys[20], keys[30] = keys[40], 0, keys[40]  # a key three times (first at 10), and a 0
    index = hashing.PositionIndex(keys)
    absent = rng.integers(-(2**63), 2**63 - 1, 1000, dtype=np.int64)
    needles = np.concatenate([keys[::-1], absent, np.zeros(1, np.int64)])
    found, at = index.find(needles)
    first = {}
    for i, k in enumerate(keys.tolist()):
        first.setdefault(k, i)
    expected = [k != 0 and k in first for k in needles.tolist()]
    assert found.tolist() == expected
    assert at.tolist() == [first[k] if ok else 0 for k, ok in zip(needles.tolist(), expected, strict=True)]
    assert index.find(keys[40:41])[1].tolist() == [10]


def test_position_index_of_no_keys_finds_nothing() -> None:
    found, at = hashing.PositionIndex(np.zeros(0, np.int64)).find(np.array([1, 0, 5], np.int64))
    assert not found.any() and at.tolist() == [0, 0, 0]


def test_sorted_member_finds_each_query_in_the_run_and_leaves_the_others_as_they_were() -> None:
    """Ascending queries against an ascending run, with repeats, gaps of every size (the gallop's steps), values
    before the first and after the last; ``found`` is only ever set, so that runs OR into one mask."""
    assert hashing.sorted_member is not None, "connectif_sync._hashing is not built: run `make install`"
    rng = np.random.default_rng(5)
    for size, queries in ((0, 10), (1, 5), (50, 1), (20_000, 3_000), (3_000, 20_000)):
        run = np.unique(rng.integers(1, 2**64 - 2, size, dtype=np.uint64))
        inside = rng.choice(run, min(len(run), queries // 2)) if len(run) else np.zeros(0, np.uint64)
        q = np.sort(np.concatenate([inside, rng.integers(0, 2**64 - 1, queries // 2, dtype=np.uint64),
                                    np.array([0, 2**64 - 1], np.uint64), inside[:3]]))  # fmt: skip
        found = np.zeros(len(q), np.uint8)
        found[::7] = 1  # set by an earlier run: stays set
        expected = np.isin(q, run) | (found == 1)
        hashing.sorted_member(run, q, found)
        assert found.astype(bool).tolist() == expected.tolist()
    with pytest.raises(ValueError, match="shorter"):
        hashing.sorted_member(np.arange(3, dtype=np.uint64), np.arange(3, dtype=np.uint64), np.zeros(2, np.uint8))


@pytest.mark.parametrize("accelerated", [True, False])
def test_stable_argsort_is_numpys_stable_order(accelerated: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C radix sort gives exactly numpy's stable order: signed and unsigned keys (high bits set), repeats
    kept in position order, a digit shared by every key (a pass skipped), empty and single arrays."""
    if accelerated and hashing._c is None:
        pytest.skip("connectif_sync._hashing not built")
    if not accelerated:
        monkeypatch.setattr(hashing, "_c", None)
    rng = np.random.default_rng(11)
    signed = rng.integers(-(2**63), 2**63 - 1, 50_000, dtype=np.int64, endpoint=True)
    signed[::9] = signed[3]  # repeats
    signed[:4] = [-(2**63), 2**63 - 1, 0, -1]
    unsigned = signed.view(np.uint64)
    narrow = rng.integers(0, 2**11, 10_000).astype(np.int64) << 22  # most digits the same for every key
    for keys in (signed, unsigned, narrow, signed[:0], signed[:1], unsigned[::-1]):
        order = hashing.stable_argsort(keys)
        assert order.dtype == np.int64 and np.array_equal(order, np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("accelerated", [pytest.param(True, marks=needs_c), False])
def test_row_hashes_come_with_their_empty_field_masks(accelerated: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C pass that hashes a chunk's CSV rows also gives each row's empty-field mask (bit i: column i null or
    empty, the first 63 columns only), exactly what the pyarrow computation gives, and the same hashes and sizes
    as ``hash_csv_rows``; without the accelerator the same three come from numpy and pyarrow."""
    if not accelerated:
        monkeypatch.setattr(hashing, "_c", None)
    n = 500
    cols = []
    for i in range(70):  # more columns than the masks track
        kind = i % 4  # values, some empty, some null, all null
        values = [None if kind == 3 or (kind == 2 and j % 5 == 0) else ("" if kind and j % 3 == 0 else f"v{j}")
                  for j in range(n + 3)]  # fmt: skip
        cols.append(pa.array(values, pa.string()).slice(3))  # offsets into the buffers
    hashes, sizes, masks = hashing.hash_csv_rows_and_masks(cols)
    expected = hashing.empty_masks_of(cols, n)
    assert (masks == expected).all() and expected.any() and (expected != expected[0]).any()
    assert int(expected.max()) < 2**63  # bit 63 and beyond: never set
    h2, s2 = hash_csv_rows(cols)
    assert (hashes == h2).all() and (sizes == s2).all()
    assert int(masks[0]) >> 3 & 1 == 1  # column 3, all NULL
