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
def test_accelerator_reads_the_last_bytes_of_a_value_as_one_word_or_byte_by_byte_at_the_buffer_end() -> None:
    """A value's last 1-7 bytes are hashed as one masked word when eight bytes can be read there, byte by
    byte at the end of the data buffer: both give the definition's hash and pyarrow's CSV size (quotes
    doubled) for every length and quote position."""
    values = [("ab" * 9)[:n][:i] + '"' + ("cd" * 9)[i:n] for n in range(0, 17) for i in range(n)] + ["", "x"]
    arr = pa.array(values)
    expected = [reference(v) for v in values]
    validity, offsets, data = arr.buffers()[:3]
    assert data is not None
    end = int(np.frombuffer(offsets, np.int32)[len(values)])
    # The buffer ends with the last value, or goes on with quotes that belong to no value (never counted).
    for raw in (data.to_pybytes()[:end], data.to_pybytes()[:end] + b'"' * 8):
        c = hashing._c
        assert c is not None
        out, sizes = np.empty(len(values), np.uint64), np.empty(len(values), np.int64)
        c.hash_rows([(offsets, raw, validity, 0, False)], len(values), out, sizes)
        assert out.tolist() == expected
        assert sizes.tolist() == row_bytes(pa.table({"v": arr})).tolist()


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


def test_keyset_table_adds_each_key_once_and_refuses_what_it_cannot_hold() -> None:
    """The duplicate rule's C table: a key is new the first time only (within a batch too), a larger table
    made by keyset_rehash holds the same keys, and the empty slot's 0, a full table or a bad length raise."""
    assert hashing.keyset_add is not None and hashing.keyset_rehash is not None, "run `make install`"
    rng = np.random.default_rng(3)
    keys = rng.integers(1, 2**64 - 1, size=600, dtype=np.uint64)
    table, dup = np.zeros(1024, np.uint64), np.empty(1200, np.uint8)
    batch = np.concatenate([keys, keys[::-1]])
    assert hashing.keyset_add(table, batch, dup) == 600
    assert not dup[:600].any() and dup[600:].all()
    bigger = np.zeros(4096, np.uint64)
    hashing.keyset_rehash(table, bigger)
    assert sorted(bigger[bigger != 0].tolist()) == sorted(keys.tolist())
    again = np.empty(600, np.uint8)
    assert hashing.keyset_add(bigger, keys, again) == 0 and again.all()
    with pytest.raises(ValueError, match="empty slot"):
        hashing.keyset_add(np.zeros(8, np.uint64), np.array([5, 0], np.uint64), np.empty(2, np.uint8))
    with pytest.raises(ValueError, match="full"):
        hashing.keyset_add(np.zeros(4, np.uint64), np.arange(1, 6, dtype=np.uint64), np.empty(5, np.uint8))
    with pytest.raises(ValueError, match="power of two"):
        hashing.keyset_add(np.zeros(6, np.uint64), keys[:1], np.empty(1, np.uint8))
    with pytest.raises(ValueError, match="larger"):
        hashing.keyset_rehash(bigger, np.zeros(1024, np.uint64))


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
