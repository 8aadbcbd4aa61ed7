"""Vectorised 64-bit hashes of Arrow string arrays (change detection and key look-ups).

Why not a library: pandas' ``hash_array`` converts Arrow strings to Python objects first (about 2 s per
million values here), hashlib works one value at a time, and pyarrow exposes no scalar hash kernel.
This is a polynomial hash over the UTF-8 bytes computed with numpy prefix sums (a few passes over the
bytes, no Python loop per row), finished with the splitmix64 mixer. It is not cryptographic; for change
detection the chance that two different values of one key collide is about 2^-64 per change.
The value is stable across runs and machines (it depends only on the bytes), so stored hashes stay valid.

The same function is compiled from ``_hashing.c`` when the package is installed where a C compiler is
(``setup.py`` builds it as an optional extension): about ten times faster, and it hashes several columns
as if joined without building the joined strings. Without it the numpy code below gives the same values;
``ACCELERATED`` says which one runs.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectif_sync.chunk import row_bytes_joined

try:
    from connectif_sync import _hashing as _c
except ImportError:  # built without a C compiler: the numpy code gives the same values
    _c = None

ACCELERATED = _c is not None
"""True when the C accelerator is installed (``connectif_sync._hashing``)."""

merge_latest = _c.merge_latest if _c is not None else None
"""``merge_latest(older, newer, at, out) -> rows``: the union of two tables of int64 ``(key hash, row hash,
source hash)`` rows sorted by key hash, ``newer[at]``'s row winning (:func:`~connectif_sync.store.blocks.
latest_hashes`); None without the C accelerator."""

keyset_add = _c.keyset_add if _c is not None else None
"""``keyset_add(table, keys, dup) -> added``: uint64 keys (not 0) into an open-addressing table of uint64 slots
(0 = empty), in order, ``dup[i] = 1`` where the key was there already (:class:`~connectif_sync.validate.KeySet`);
None without the C accelerator."""

keyset_rehash = _c.keyset_rehash if _c is not None else None
"""``keyset_rehash(old, new)``: a :data:`keyset_add` table into a larger one; None without the C accelerator."""

version_tokens = _c.version_tokens if _c is not None else None
"""``version_tokens(xmin, ctid, n, seed, out)``: PostgreSQL row versions as source hashes
(:func:`connectif_sync.client_hash.version_tokens`, which computes the same with numpy without it)."""

pg_hash_int64 = _c.pg_hash_int64 if _c is not None else None
"""``pg_hash_int64(values, validity, offset, n, seed, out)``: ``out[i] ^=`` PostgreSQL's ``hashint8extended`` of
int64 ``values[i]`` (the seed for a NULL, per the Arrow ``validity`` bitmap from bit ``offset``); None without the
C accelerator (:mod:`connectif_sync.client_hash`)."""

pg_hash_text = _c.pg_hash_text if _c is not None else None
"""``pg_hash_text(column, n, seed, out)``: ``out[i] ^=`` PostgreSQL's ``hashtextextended`` of an Arrow string
column's bytes (the tuple :func:`_c_hash` builds); None without the C accelerator."""

mysql_crc_rows = _c.mysql_crc_rows if _c is not None else None
"""``mysql_crc_rows(prefix, columns, n, out)``: MariaDB's source hash of each row (its text built from Arrow
columns: :mod:`connectif_sync.client_hash`); None without the C accelerator."""


email_rows = _c.email_rows if _c is not None else None
"""``email_rows(column, n, offsets_out, data_out, status_out) -> bytes``: the email field's ASCII values trimmed,
lower-cased and checked against :data:`~connectif_sync.shape.EMAIL_PATTERN` in one pass; None without the C
accelerator (:func:`connectif_sync.shape.shape_email` uses Arrow's kernels then)."""


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` of int64 or uint64 keys, by the C accelerator's radix sort where it is
    built: 3-4x faster than numpy's (introsort, unstable) for the random 64-bit hashes sorted by a commit
    and by the duplicate rule (bench/README.md, session 11); equal keys keep their order."""
    if _c is not None and keys.ndim == 1 and keys.dtype in (np.int64, np.uint64) and len(keys) < 2**31:
        order = np.empty(len(keys), np.int64)
        _c.argsort_u64(np.ascontiguousarray(keys), order, keys.dtype == np.int64)
        return order
    return np.argsort(keys, kind="stable")


_P = np.uint64(0x100000001B3)
_P_INV = np.uint64(pow(0x100000001B3, -1, 2**64))
_SEGMENT = 1 << 20  # bytes hashed per numpy pass: bounds the temporary arrays to a few MB


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)


@functools.cache
def _segment_powers() -> tuple[np.ndarray, np.ndarray]:
    """The powers of P and of its inverse up to one segment, for the numpy code only: made on its first use
    (16 MB that every process held, and 16 MB more while they were made, where the C accelerator needs none)."""
    return _powers(_P, _SEGMENT + 1), _powers(_P_INV, _SEGMENT + 1)


GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""2^64 / the golden ratio: spreads a small multiplier (a length, a line) over 64 bits (also in ``_hash64.h``)."""


def mix64(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, in place: spreads every input bit over the whole 64-bit result."""
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def _text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One string (or large_string) array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    return values


def _c_hash(
    columns: list[pa.Array | pa.ChunkedArray],
    n: int,
    sizes: np.ndarray | None = None,
    masks: np.ndarray | None = None,
) -> np.ndarray:
    """The C accelerator over Arrow's own buffers: no copy, no joined strings (``sizes``, ``masks``: see
    :func:`hash_csv_rows_and_masks`)."""
    assert _c is not None
    specs = []
    for col in columns:
        arr = _text(col)
        if len(arr) != n:
            raise ValueError(f"columns of different lengths: {len(arr)} and {n}")
        validity, offsets, data = arr.buffers()[:3]
        specs.append(
            (offsets, data if data is not None else b"", validity, arr.offset, pa.types.is_large_string(arr.type))
        )
    out = np.empty(n, dtype=np.uint64)
    _c.hash_rows(specs, n, out, sizes, masks)
    return out


def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per value of a string array (nulls hash like the empty string)."""
    if _c is not None:
        return _c_hash([values], len(values))
    return numpy_hash_strings(values)


def numpy_hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """:func:`hash_strings` without the C accelerator (the fallback; tests compare the two)."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 0:
            return np.empty(0, dtype=np.uint64)
        return np.concatenate([numpy_hash_strings(c) for c in values.chunks])
    values = _text(values)
    if values.null_count:
        values = pc.fill_null(values, "")
    n = len(values)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    bufs = values.buffers()
    off_type = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type)[values.offset : values.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, dtype=np.uint8)
    i = 0
    with np.errstate(over="ignore"):
        while i < n:
            # As many whole values as fit in one segment (at least one, however long).
            j = int(np.searchsorted(offsets, offsets[i] + _SEGMENT, side="right")) - 1
            j = min(max(j, i + 1), n)
            a, b = int(offsets[i]), int(offsets[j])
            seg_len = b - a
            pw = _segment_powers()[0] if seg_len <= _SEGMENT else _powers(_P, seg_len + 1)
            pi = _segment_powers()[1] if seg_len <= _SEGMENT else _powers(_P_INV, seg_len + 1)
            rel = offsets[i : j + 1] - a
            lengths = rel[1:] - rel[:-1]
            if seg_len == 0:
                h = np.zeros(j - i, dtype=np.uint64)
            else:
                seg = data[a:b].astype(np.uint64)
                seg += np.uint64(1)  # so that zero bytes still count
                seg *= pw[:seg_len]
                # reduceat sums seg[start_k:start_k+1] up to the next start; an empty value (equal starts)
                # would cut its predecessor short, so only non-empty values take part.
                nonempty = lengths > 0
                starts = rel[:-1][nonempty]
                h = np.zeros(j - i, dtype=np.uint64)
                h[nonempty] = np.add.reduceat(seg, starts) * pi[starts]
            h ^= lengths.astype(np.uint64) * GOLDEN
            out[i:j] = mix64(h)
            i = j
    return out


def join_columns(columns: list[pa.Array | pa.ChunkedArray]) -> pa.Array:
    """Rows of string columns as one string each, values separated by the unit separator (nulls empty)."""
    return pc.binary_join_element_wise(*columns, "\x1f", null_handling="replace", null_replacement="")


def hash_columns(columns: list[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    """One uint64 per row over several string columns: the hash of :func:`join_columns`' strings."""
    if _c is not None and columns:
        return _c_hash(columns, len(columns[0]))
    return numpy_hash_strings(join_columns(columns))


def hash_csv_rows(columns: list[pa.Array | pa.ChunkedArray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hash_columns` of the output columns, and each row's size as the CSV writer renders it
    (:func:`connectif_sync.chunk.row_bytes`), in one pass over the values."""
    n = len(columns[0]) if columns else 0
    if _c is not None and columns:
        sizes = np.empty(n, dtype=np.int64)
        return _c_hash(columns, n, sizes), sizes
    joined = join_columns(columns)
    return numpy_hash_strings(joined), row_bytes_joined(joined, columns)


MASK_COLUMNS = 63  # output columns tracked by the empty-field masks (bits of an int64)


def empty_masks_of(columns: list[pa.Array | pa.ChunkedArray], n: int) -> np.ndarray:
    """Per row of ``n``, bit i set when ``columns[i]`` (the first :data:`MASK_COLUMNS`) is empty (null or "")."""
    masks = np.zeros(n, np.int64)
    for i, col in enumerate(columns[:MASK_COLUMNS]):
        empty = pc.fill_null(pc.equal(pc.binary_length(col), 0), True) if col.null_count < len(col) else None
        bits = np.ones(n, bool) if empty is None else np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool)
        masks |= bits.astype(np.int64) << np.int64(i)
    return masks


def hash_csv_rows_and_masks(columns: list[pa.Array | pa.ChunkedArray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`hash_csv_rows` and each row's empty-field mask (:func:`empty_masks_of`): with the C accelerator in
    the same pass over the values, where a pass of their own cost about 0.1 CPU s per million rows of six
    columns (bench/README.md, session 12)."""
    n = len(columns[0]) if columns else 0
    if _c is not None and columns:
        sizes, masks = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        return _c_hash(columns, n, sizes, masks), sizes, masks
    hashes, sizes = hash_csv_rows(columns)
    return hashes, sizes, empty_masks_of(columns, n)


def as_signed(h: np.ndarray) -> np.ndarray:
    """View uint64 hashes as int64 (what SQL ``BIGINT`` / SQLite ``INTEGER`` store)."""
    return h.view(np.int64)


MAX_LOAD = 0.75  # filled share of a hash table's slots before it doubles


def _slots_for(n: int) -> int:
    """A power-of-two table length that keeps ``n`` entries under :data:`MAX_LOAD`."""
    slots = 2
    while slots * MAX_LOAD <= n:
        slots *= 2
    return slots


class PositionIndex:
    """Where each of a fixed array of uint64 keys is, by key (an int32 table of positions, 8 bytes per key
    at most): :meth:`find` costs a probe or two per needle, where a binary search over a sorted copy walks
    twenty levels of a million keys. Keys equal to 0 are never found; a repeated key is found at its first
    position. Without the C accelerator: an argsort and binary searches, same answers."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.ascontiguousarray(keys).view(np.uint64)
        self._table: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self._sorted: np.ndarray | None = None
        if _c is not None and len(self.keys) < 2**31 - 1:
            self._table = np.empty(_slots_for(len(self.keys)), np.int32)
            _c.positions_build(self._table, self.keys)
        else:
            self._order = np.argsort(self.keys, kind="stable")
            self._sorted = self.keys[self._order]

    def find(self, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position)`` of each needle (position 0 where not found)."""
        q = np.ascontiguousarray(needles).view(np.uint64)
        n = len(q)
        if self._table is not None:
            assert _c is not None
            found = np.empty(n, np.uint8)
            at = np.empty(n, np.int64)
            _c.positions_find(self._table, self.keys, q, found, at)
            return found.view(bool), at
        assert self._order is not None and self._sorted is not None
        if len(self.keys) == 0:
            return np.zeros(n, bool), np.zeros(n, np.int64)
        srt = self._sorted
        i = np.searchsorted(srt, q)
        i[i == len(srt)] = 0
        found = (srt[i] == q) & (q != 0)
        at = np.where(found, self._order[i], 0)
        return found, at
