"""Source hashes of rows read whole, computed by this process as the database computes them.

A full scan's probe has the database compute each row's source hash (``extract.source_hash_sql``): it reads
only keys and hashes. A read of whole rows (a first run, the rows a probe found unconfirmed) receives the
values anyway, and hashing them here costs a few nanoseconds a value where the database spends most of a
second of CPU per million rows (bench/README.md, session 12). So such a read leaves to the database only what
this module cannot compute exactly, from the values the driver decoded:

* **PostgreSQL**: the hash is the XOR of one term per column, PostgreSQL's own 64-bit hash of the value.
  Computed here: integers, booleans, dates, timestamps and instants (ADBC decodes PostgreSQL's binary values
  without loss: a timestamp is PostgreSQL's microseconds moved to 1970, ``infinity`` included), and
  ``varchar``/``text`` when the database stores text as UTF-8 (the bytes the driver hands over). The server
  keeps the other terms (NUMERIC, floats, CHAR, domains, text in another encoding), XORed in here.
  The functions are those of PostgreSQL's ``hashfn.c`` (``_hashing.pg_hash_int64``/``pg_hash_text``).
* **MariaDB 10.8+**: the hash is two CRCs of the values joined as text, all or nothing: computed here when
  every column is an integer, a date or UTF-8 text (printed as MariaDB prints them; ``_hashing.mysql_crc_rows``),
  else by the server as before.

* **PostgreSQL tables** (a plain table the user may read whole: :attr:`Mapping.source_oid`): no value is
  hashed at all. A row's source hash is made from its *row version*, the system columns ``xmin`` (the
  transaction that wrote it) and ``ctid`` (where it is), which every read selects and which change with every
  update (:func:`version_tokens` says why that is safe): a full scan's probe then reads keys and versions
  only, and the server unpacks no row. Views, partitioned and inherited tables keep the value hash above.

Without the C accelerator the database computes everything, as before (row versions are hashed by
numpy). The tests compare every kind and edge value with the database's own expression.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from connectif_sync import hashing
from connectif_sync.hashing import GOLDEN, mix64, mysql_crc_rows, pg_hash_int64, pg_hash_text
from connectif_sync.mappings import Mapping
from connectif_sync.sources import ValueKind

PG_KINDS = frozenset(
    {ValueKind.INTEGER, ValueKind.BOOLEAN, ValueKind.DATE, ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ, ValueKind.TEXT}
)
"""The kinds whose PostgreSQL term this process computes (:data:`ValueKind.TEXT` only from a UTF-8 database)."""

MARIADB_KINDS = frozenset({ValueKind.INTEGER, ValueKind.DATE, ValueKind.TEXT})
"""The kinds MariaDB's joined text is built from here (text only in a UTF-8 character set: see
:func:`connectif_sync.mappings.check_source_columns`; timestamps print as many decimals as the column keeps,
which the kinds do not say)."""

_EPOCH_US = np.uint64(946_684_800_000_000)  # 2000-01-01, PostgreSQL's epoch, in Arrow's microseconds since 1970
_EPOCH_DAYS = np.uint32(10_957)
_USECS_PER_DAY = 86_400_000_000
# PostgreSQL's dates that convert to a timestamp (``date::timestamp`` raises outside): 4714-11-24 BC up to
# 294276 AD, in days since 2000-01-01.
_FIRST_DAY, _END_DAY = -2_451_545, 106_751_983
_INT32_MIN, _INT32_MAX = np.int32(-(2**31)), np.int32(2**31 - 1)
_INT64_MIN, _INT64_MAX = np.int64(-(2**63)), np.int64(2**63 - 1)


def hashed_columns(mapping: Mapping) -> list[str]:
    """The columns of a row's source hash, in the order of their seeds (``updated_at`` is not one: a row
    touched without a change is not a change)."""
    return [c for c in mapping.source_columns() if c != mapping.updated_at]


def term_seed(fingerprint: int, position: int) -> int:
    """The seed of the column at ``position``: the mapping's fingerprint plus the position (two columns
    swapping values change the hash), as the signed bigint the SQL takes; a NULL's term is the seed."""
    seed = (fingerprint + (position + 1) * 0x9E3779B97F4A7C15) % 2**64
    return seed - 2**64 if seed >= 2**63 else seed


def pg_columns(mapping: Mapping) -> frozenset[str]:
    """The columns whose term this process computes when it reads whole rows of a PostgreSQL source (see the
    module's docstring); empty without the C accelerator."""
    if pg_hash_int64 is None:
        return frozenset()
    utf8 = mapping.source_encoding == "UTF8"
    out = set()
    for c in hashed_columns(mapping):
        kind = mapping.source_kinds.get(c.lower())
        if kind in PG_KINDS and (kind is not ValueKind.TEXT or utf8):
            out.add(c)
    return frozenset(out)


def mariadb_columns(mapping: Mapping) -> frozenset[str]:
    """Every hashed column when this process can build MariaDB's joined text of the rows it reads whole (each
    an integer, a date or UTF-8 text), else none: the text is hashed whole, by one side."""
    cols = hashed_columns(mapping)
    if mysql_crc_rows is None or not all(mapping.source_kinds.get(c.lower()) in MARIADB_KINDS for c in cols):
        return frozenset()
    return frozenset(cols)


def finish_mariadb(table: pa.Table, mapping: Mapping, fingerprint: int, column: str) -> pa.Table:
    """``table`` with MariaDB's source hash of every row as ``column`` (:func:`mariadb_columns`: the server
    computed none): ``CONCAT_WS(CHAR(31), fingerprint, COALESCE(column, ''), ...)`` built and hashed here."""
    assert mysql_crc_rows is not None
    specs: list[tuple[str, tuple[object, ...]]] = []
    for c in hashed_columns(mapping):
        values = table.column(c).combine_chunks()
        kind, t, n = mapping.source_kinds[c.lower()], values.type, len(values)
        if pa.types.is_null(t):  # NULL all through: printed as nothing, as an empty text would be
            specs.append(("text", (np.zeros(n + 1, np.int32), b"", None, 0, False)))
            continue
        validity, data = values.buffers()[0], values.buffers()[1]
        if kind is ValueKind.TEXT and (pa.types.is_string(t) or pa.types.is_large_string(t)):
            text = values.buffers()[2]
            specs.append(("text", (data, text if text is not None else b"", validity, values.offset,
                                   pa.types.is_large_string(t))))  # fmt: skip
        elif kind is ValueKind.INTEGER and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
            specs.append(("int", (_integers(values, c), validity, values.offset)))
        elif kind is ValueKind.DATE and pa.types.is_date32(t):
            specs.append(("date", (np.frombuffer(data, np.int32)[values.offset : values.offset + n], validity,
                                   values.offset)))  # fmt: skip
        else:
            raise TypeError(f"column {c!r}: {kind} value read as {t}: the source hash cannot be computed here")
    out = np.empty(table.num_rows, np.int64)
    mysql_crc_rows(str(int(fingerprint)).encode(), specs, table.num_rows, out)
    result = pa.array(out, pa.int64())
    names = table.column_names
    if column in names:
        return table.set_column(names.index(column), column, result)
    return table.append_column(column, result)


def _integers(values: pa.Array, name: str) -> np.ndarray:
    """An integer (or boolean) column's values as int64 (NULLs' slots hold anything)."""
    n, off, t = len(values), values.offset, values.type
    data = values.buffers()[1]
    if pa.types.is_boolean(t):
        bits = np.unpackbits(np.frombuffer(data, np.uint8)[off // 8 : (off + n + 7) // 8 + 1], bitorder="little")
        return bits[off % 8 : off % 8 + n].astype(np.int64)
    raw = np.frombuffer(data, t.to_pandas_dtype())[off : off + n]
    if raw.dtype == np.uint64 and len(raw) and int(raw.max()) >= 2**63:
        raise TypeError(f"column {name!r}: an unsigned value above 2^63 cannot be hashed here")
    return raw.astype(np.int64)


def finish_pg(table: pa.Table, mapping: Mapping, fingerprint: int, client: frozenset[str], column: str) -> pa.Table:
    """``table`` with the terms of ``client`` (:func:`pg_columns`) XORed into its source-hash ``column``,
    which it gets if the server computed no term."""
    if not client:
        return table
    n = table.num_rows
    names = table.column_names
    at = names.index(column) if column in names else -1
    if at >= 0:
        server = table.column(at).combine_chunks()
        h = np.array(server.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64).view(np.uint64)
    else:
        h = np.zeros(n, np.uint64)
    kinds = mapping.source_kinds
    for position, c in enumerate(hashed_columns(mapping)):
        if c in client:
            _xor_term(table.column(c).combine_chunks(), kinds[c.lower()], term_seed(fingerprint, position), h, c)
    result = pa.array(h.view(np.int64), pa.int64())
    return table.set_column(at, column, result) if at >= 0 else table.append_column(column, result)


def _xor_term(values: pa.Array, kind: ValueKind, seed: int, h: np.ndarray, name: str) -> None:
    """``h ^= `` the column's term of every row (the seed for a NULL)."""
    assert pg_hash_int64 is not None and pg_hash_text is not None
    n, unsigned = len(values), seed % 2**64
    if pa.types.is_null(values.type):
        h ^= np.uint64(unsigned)
        return
    validity = values.buffers()[0]
    if kind is ValueKind.TEXT:
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            raise TypeError(f"column {name!r}: text read as {values.type}, not a string")
        _, offsets, data = values.buffers()[:3]
        large = pa.types.is_large_string(values.type)
        spec = (offsets, data if data is not None else b"", validity, values.offset, large)
        pg_hash_text(spec, n, unsigned, h)
        return
    pg_hash_int64(_int8_values(values, kind, name), validity, values.offset, n, unsigned, h)


def _int8_values(values: pa.Array, kind: ValueKind, name: str) -> np.ndarray:
    """The int8 that PostgreSQL's hash of each value takes (``hashint8extended``'s argument): the integer,
    a boolean as 0/1, a date as the midnight timestamp it casts to, a timestamp (an instant: its UTC time)
    as microseconds since 2000-01-01. NULLs' slots hold anything: the validity bitmap skips them."""
    n, off, t = len(values), values.offset, values.type
    data = values.buffers()[1]
    if (kind is ValueKind.INTEGER and pa.types.is_integer(t)) or (kind is ValueKind.BOOLEAN and pa.types.is_boolean(t)):
        return _integers(values, name)
    if kind is ValueKind.DATE and pa.types.is_date32(t):
        # ADBC moved PostgreSQL's days (since 2000) to 1970 in 32-bit arithmetic: moved back the same way,
        # infinity is INT32_MAX again, and casts to the infinite timestamp.
        days = (np.frombuffer(data, np.uint32)[off : off + n] - _EPOCH_DAYS).view(np.int32)
        finite = (days != _INT32_MAX) & (days != _INT32_MIN)
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        bad = finite & valid & ((days < _FIRST_DAY) | (days >= _END_DAY))
        if bad.any():  # (Python's dates end at 9999: the year is told from the days)
            year = 2000 + int(days[int(np.argmax(bad))]) / 365.2425
            raise ValueError(
                f"column {name!r}: a date in the year {year:.0f} is outside PostgreSQL's timestamp range (4713 BC "
                "to 294276 AD), which its source hash casts dates to. Fix: correct the value in the source"
            )
        out = days.astype(np.int64) * _USECS_PER_DAY
        out[days == _INT32_MAX] = _INT64_MAX
        out[days == _INT32_MIN] = _INT64_MIN
        return out
    if kind in (ValueKind.TIMESTAMP, ValueKind.TIMESTAMPTZ) and pa.types.is_timestamp(t) and t.unit == "us":
        # The same move in 64-bit arithmetic (ADBC's infinity wrapped around: moved back, it is INT64_MAX).
        return (np.frombuffer(data, np.uint64)[off : off + n] - _EPOCH_US).view(np.int64)
    raise TypeError(f"column {name!r}: {kind} value read as {t}: the source hash cannot be computed here")


# PostgreSQL row versions -------------------------------------------------------------------------------------

XMIN_COLUMN = "__connectif_xmin"
CTID_COLUMN = "__connectif_ctid"
"""The system columns a read of a PostgreSQL table with row versions adds (:func:`row_version_sql`)."""

def row_version_sql(quote: Callable[[str], str]) -> str:
    """The columns a read adds for :func:`finish_versions`: the row version's transaction and position."""
    return f"xmin AS {quote(XMIN_COLUMN)}, ctid AS {quote(CTID_COLUMN)}"


def _fixed_width(values: pa.Array, width: int, name: str) -> np.ndarray:
    """The bytes of a binary column whose values are all ``width`` bytes (PostgreSQL's ``xid`` and ``tid`` as
    ADBC hands them over: an opaque extension of ``binary``), as an ``(n, width)`` array."""
    if isinstance(values.type, pa.BaseExtensionType):
        values = values.storage
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)) or values.null_count:
        raise TypeError(f"column {name!r}: a row version read as {values.type}, not {width} bytes a row")
    n, off = len(values), values.offset
    offsets = np.frombuffer(values.buffers()[1], np.int64 if pa.types.is_large_binary(values.type) else np.int32)
    start, end = int(offsets[off]), int(offsets[off + n])
    if end - start != width * n:
        raise TypeError(f"column {name!r}: a row version read as values of another size than {width} bytes")
    if n == 0:
        return np.empty((0, width), np.uint8)
    return np.frombuffer(values.buffers()[2], np.uint8, count=end - start, offset=start).reshape(n, width)


def version_tokens(xmin: pa.Array, ctid: pa.Array, fingerprint: int, oid: int) -> np.ndarray:
    """Each row version's source hash: its table (``oid``), inserting transaction (``xmin``) and position
    (``ctid``: block and line) mixed with the mapping's ``fingerprint``, never 0 (a missing hash).

    Why a version serves as a source hash: PostgreSQL never changes a row of a table in place; an update
    writes a new version, with the updating transaction as its ``xmin``, and two versions of one table never
    share both ``xmin`` and ``ctid`` (a position is reused only after its row is gone, by a later
    transaction; the same 32-bit transaction number again only after four billion more). Freezing keeps
    ``xmin`` (PostgreSQL 9.4 and later); VACUUM FULL and CLUSTER move rows (new ``ctid``): their rows are then
    read whole once and found unchanged (:mod:`connectif_sync.refresh`). The position and the transaction
    take 80 bits: the block and transaction are packed into 64 and mixed by a bijection, the line added and
    mixed again."""
    x = _fixed_width(xmin, 4, XMIN_COLUMN)
    t = _fixed_width(ctid, 6, CTID_COLUMN)
    if len(x) != len(t):
        raise ValueError(f"{len(x)} transactions for {len(t)} positions: not the versions of the same rows")
    seed = mix64(np.array([(int(oid) * int(GOLDEN)) % 2**64], np.uint64))
    seed ^= np.uint64(fingerprint % 2**64)
    seed = mix64(seed)
    if hashing.version_tokens is not None:
        out = np.empty(len(x), np.uint64)
        hashing.version_tokens(x, t, len(x), int(seed[0]), out)
        return out.view(np.int64)
    xid = x.view(">u4").reshape(-1).astype(np.uint64)
    block = np.ascontiguousarray(t[:, :4]).view(">u4").reshape(-1).astype(np.uint64)
    line = np.ascontiguousarray(t[:, 4:]).view(">u2").reshape(-1).astype(np.uint64)
    h = mix64(((xid << np.uint64(32)) | block) ^ seed[0])
    h += line * GOLDEN
    h = mix64(h)
    h[h == 0] = 1
    return h.view(np.int64)


def table_versions(table: pa.Table, mapping: Mapping, fingerprint: int) -> np.ndarray:
    """:func:`version_tokens` of the rows of ``table`` (a read with :func:`row_version_sql`'s columns)."""
    if mapping.source_oid is None:
        raise ValueError(f"{mapping.path}: the source is not a PostgreSQL table whose row versions can be read")
    xmin, ctid = (table.column(c).combine_chunks() for c in (XMIN_COLUMN, CTID_COLUMN))
    return version_tokens(xmin, ctid, fingerprint, mapping.source_oid)


def finish_versions(table: pa.Table, mapping: Mapping, fingerprint: int, column: str) -> pa.Table:
    """``table`` with :func:`table_versions` as its source-hash ``column``, without the version columns."""
    names = table.column_names
    result = pa.array(table_versions(table, mapping, fingerprint), pa.int64())
    table = table.drop_columns([XMIN_COLUMN, CTID_COLUMN])
    if column in names:
        return table.set_column(table.column_names.index(column), column, result)
    return table.append_column(column, result)
