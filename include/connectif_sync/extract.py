"""Extract: stream the rows a mapping reads, in bounded chunks, never the whole table in memory.

Two paths produce the same Arrow chunks:

* **Arrow-native drivers** (SQLite files, PostgreSQL, MySQL/MariaDB): the database's rows arrive as Arrow
  record batches without a Python object per row, which is what makes a million rows take about a second.
  SQLite and PostgreSQL through ADBC (PostgreSQL with ``COPY ... TO STDOUT`` in binary), MySQL through
  ConnectorX (Rust; its ``arrow_stream`` result). All three go through the same reader (:class:`RangeReads`:
  ranges of an integer key read by several connections at once, in order).
* **SQLAlchemy** (any other database, or ``path="sqlalchemy"``): ``stream_results`` / ``yield_per``
  (a server-side cursor where the driver has one) and ``Result.partitions()``; each partition becomes an
  Arrow table.

Values read back from the source (to resume a read after them, or to retry some keys) are bound parameters
(:class:`Query`), never text pasted into the SQL: a key ending in a backslash is an escape in MySQL.

:func:`extract` yields pandas DataFrames with Arrow-backed dtypes (zero-copy views of those chunks);
:func:`extract_arrow` yields the Arrow tables the pipeline works on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import sqlalchemy as sa

from connectif_sync import client_hash
from connectif_sync.mappings import Mapping
from connectif_sync.sources import ValueKind, quoted_table, source_engine

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_CHUNK_ROWS = 32_768
DEFAULT_READERS = 2  # connections reading a full table at once (ADBC): the database's own work in parallel
# Every MySQL session that reads a source: TIMESTAMPs in UTC whatever the server's zone (DATETIME has none: taken
# as UTC, as on every database). (Not PIPES_AS_CONCAT: ConnectorX parses and re-renders the query, ``||`` as OR;
# a mapping's SQL that concatenates has a ``<name>.mysql.sql`` variant, see Mapping.sql_for.)
MYSQL_SESSION = ("SET time_zone = '+00:00'",)
PROBE_HASH_COLUMN = "__connectif_source_hash"  # the column a probe query adds (see probe_query)


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` on the mapping's ``date_column`` (purchases)."""

    start: datetime | None = None
    end: datetime | None = None


class Query(str):
    """SQL text with ``:name`` markers and the values bound to them (``params``).

    A ``str``, so that a query without values is used as any SQL text; each driver binds the values its own
    way (:func:`_bound`), so no value read from the source is ever pasted into SQL text by us.
    """

    params: dict[str, Any]

    def __new__(cls, sql: str, params: dict[str, Any] | None = None) -> Query:
        obj = super().__new__(cls, sql)
        obj.params = dict(params or {})
        return obj


_MARKER = re.compile(r":(cs_[a-z]+[0-9]+)\b")


def _bound(sql: str, style: str, dialect: sa.Dialect | None = None) -> tuple[str, Any]:
    """``sql`` for a driver's parameter style: ``qmark`` (ADBC SQLite), ``dollar`` (ADBC PostgreSQL),
    ``named`` (SQLAlchemy ``text``) or ``literal`` (ConnectorX, which takes no parameters: the values are
    then rendered by SQLAlchemy's dialect, which escapes them as that database reads them, backslashes
    included on MySQL). Returns the text and the parameters (a list, a dict, or None)."""
    params = sql.params if isinstance(sql, Query) else {}
    if not params:
        return str(sql), None
    if style == "named":
        return str(sql), params
    order: list[Any] = []

    def mark(m: re.Match[str]) -> str:
        value = params[m.group(1)]
        if style == "literal":
            assert dialect is not None
            return str(sa.literal(value).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        order.append(value)
        return "?" if style == "qmark" else f"${len(order)}"

    text = _MARKER.sub(mark, str(sql))
    return text, (order if style != "literal" else None)


def _check_value(value: Any) -> Any:
    """A value read back from the source that a read may resume after."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"cannot resume a read after the value {value!r}")
    return value


def _literal(ts: datetime) -> str:
    """A timestamp literal every SQL database compares with its timestamp/text columns."""
    return "'" + ts.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S") + "'"


def build_query(
    mapping: Mapping,
    dialect: sa.Dialect,
    *,
    since: datetime | None = None,
    window: Window | None = None,
    keys: list[str] | None = None,
    id_range: tuple[int, int] | None = None,
    after: tuple[Any, ...] | None = None,
    ids: Sequence[int] | None = None,
    select: str | None = None,
    source_hash: int | None = None,
    client_hashed: frozenset[str] = frozenset(),
    versions: bool = False,
) -> Query:
    """The SELECT that extraction runs: the mapped columns of the source, filtered and ordered.

    ``since`` keeps rows whose ``updated_at`` is at or after it (rows without one are left to full scans:
    an ``OR ... IS NULL`` would stop databases from using the ``updated_at`` index); ``window`` filters
    ``date_column``; ``keys`` restricts the order_by's first column
    (used to retry specific rows); ``id_range`` ``(lo, hi)`` keeps ``lo <= order column < hi`` (parallel
    reads, see :func:`integer_ranges`); ``after`` keeps the rows that sort after these ``order_by`` values
    (resuming a read); ``ids`` keeps the rows whose integer order column is one of these (the rows a probe
    found unconfirmed); ``select`` replaces the column list; ``source_hash`` (the mapping's fingerprint) adds
    each row's source hash computed by the database (:func:`source_hash_sql`) as column
    :data:`PROBE_HASH_COLUMN`, where the database has one, but for the terms of ``client_hashed`` columns
    (:mod:`connectif_sync.client_hash` adds them to the rows read); with ``versions`` (:func:`row_versions`)
    the rows' PostgreSQL row versions instead, from which this process makes their source hashes
    (:func:`connectif_sync.client_hash.finish_versions`). Identifiers were validated by the mapping and are
    quoted here.
    """
    q = dialect.identifier_preparer.quote
    cols = select if select is not None else ", ".join(q(c) for c in mapping.source_columns())
    hashed = None
    if source_hash is not None and select is None and versions:
        cols += ", " + client_hash.row_version_sql(q)
    elif source_hash is not None and select is None:
        hashed = source_hash_sql(mapping, dialect, source_hash, client_hashed)
    if hashed is not None:
        cols += f", {hashed} AS {q(PROBE_HASH_COLUMN)}"
    table = mapping.table
    source = quoted_table(table, dialect) if table is not None else f"({mapping.sql_for(dialect.name)}) src"
    where: list[str] = []
    if since is not None:
        if not mapping.updated_at:
            raise ValueError(f"{mapping.path}: incremental extraction needs `updated_at` in the mapping")
        where.append(f"{q(mapping.updated_at)} >= {_literal(since)}")
    if window is not None and mapping.date_column:
        d = q(mapping.date_column)
        if window.start is not None:
            where.append(f"{d} >= {_literal(window.start)}")
        if window.end is not None:
            where.append(f"{d} < {_literal(window.end)}")
    params: dict[str, Any] = {}
    if keys is not None and mapping.order_by:
        params.update({f"cs_key{i}": str(k) for i, k in enumerate(keys)})
        marks = ", ".join(f":cs_key{i}" for i in range(len(keys))) or "NULL"
        where.append(f"{q(mapping.order_by[0])} IN ({marks})")
    if ids is not None and mapping.order_by:
        where.append(f"{q(mapping.order_by[0])} IN ({', '.join(str(int(i)) for i in ids) or 'NULL'})")
    selective = bool(where)
    if id_range is not None and mapping.order_by:
        where.append(
            f"{q(mapping.order_by[0])} >= {int(id_range[0])} AND {q(mapping.order_by[0])} < {int(id_range[1])}"
        )
    if after is not None and mapping.order_by:
        params.update({f"cs_after{i}": _check_value(v) for i, v in enumerate(after)})
        order, vals = ", ".join(q(c) for c in mapping.order_by), ", ".join(f":cs_after{i}" for i in range(len(after)))
        where.append(f"({order}) > ({vals})" if len(after) > 1 else f"{order} > {vals}")
    sql = f"SELECT {cols} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if mapping.order_by:
        # SQLite would rather walk the whole table in rowid order than sort a few filtered rows; a unary +
        # hides the order column from the planner, so a selective filter uses its index (0.5 s -> 10 ms).
        # (Not for an id range alone: that one walks the order column's own index, already sorted.)
        plus = "+" if selective and dialect.name == "sqlite" else ""
        sql += " ORDER BY " + ", ".join(plus + q(c) for c in mapping.order_by)
    return Query(sql, params)


def source_hash_sql(
    mapping: Mapping, dialect: sa.Dialect, fingerprint: int, client_hashed: frozenset[str] = frozenset()
) -> str | None:
    """The SQL expression of a row's *source hash* on databases that can compute a 64-bit hash themselves
    (PostgreSQL, MySQL/MariaDB), or None (SQLite: its own function, see :func:`probe_query`; others).

    A full scan then reads only each row's key and this hash (:func:`probe_query`), and reads
    in full only the rows whose hash Connectif did not confirm: the database's work to produce the values stays,
    but the client no longer decodes, converts and hashes every value. Every read of the source by the sync
    adds the same expression (``source_hash`` of :func:`build_query`), so the hashes stored for confirmed rows
    are the database's. ``fingerprint`` (the mapping's) is part of the hash, so a changed mapping changes
    every hash. PostgreSQL: each column's own 64-bit hash, by the kind of value it holds
    (:attr:`Mapping.source_kinds`, else its text), combined by XOR (:func:`_pg_value_hash`). MariaDB 10.8+:
    ``CRC32C`` and ``CRC32`` of the values joined as text with the unit separator, a NULL as empty; MySQL and
    older MariaDB: ``MD5`` of that text (:func:`has_crc32c`). A store whose hashes another expression wrote (a
    server upgraded, a version that hashed otherwise, a column's type changed) costs one full scan that reads
    every row and stores the new hashes (:mod:`connectif_sync.refresh`). ``client_hashed`` (PostgreSQL): columns
    whose terms the reader adds (:mod:`connectif_sync.client_hash`), left out here; None when no term is left
    (MariaDB: all or nothing).
    """
    q = dialect.identifier_preparer.quote
    cols = client_hash.hashed_columns(mapping)
    if not cols:
        return None
    fp = int(fingerprint)
    if dialect.name == "postgresql":
        kinds = mapping.source_kinds
        terms = [_pg_value_hash(q(c), kinds.get(c.lower(), ValueKind.OTHER), fp, i)
                 for i, c in enumerate(cols) if c not in client_hashed]  # fmt: skip
        return "(" + " # ".join(terms) + ")" if terms else None
    if dialect.name in ("mysql", "mariadb"):
        if client_hashed:
            return None
        joined = ", ".join([f"'{fp}'"] + [f"COALESCE({q(c)}, '')" for c in cols])
        text = f"CONCAT_WS(CHAR(31), {joined})"
        if has_crc32c(dialect):
            # Two CRCs of the text (their polynomials differ: a change both miss is one neither misses below 63
            # bits), 63 bits: mariadbd's CPU per 1M-row full scan 2.6-3.1 -> 1.4-1.9 s against MD5 (bench/README.md).
            return f"((CRC32C({text}) & 2147483647) << 32) | CRC32({text})"
        # MD5's first 64 bits as 8 bytes (MySQL has no 64-bit hash function of text); the reader keeps their
        # first 60 (``diff.database_hashes``), the value versions before wrote (``CAST(CONV(SUBSTRING(MD5(..),
        # 1, 15), 16, 10) AS SIGNED)``), which cost the server about 20% more per row.
        return f"UNHEX(LEFT(MD5({text}), 16))"
    return None


_PG_HASHES = {
    ValueKind.INTEGER: "hashint8extended({c}, {seed})",
    ValueKind.BOOLEAN: "hashint4extended({c}::int, {seed})",
    ValueKind.DATE: "timestamp_hash_extended({c}::timestamp, {seed})",
    ValueKind.TIMESTAMP: "timestamp_hash_extended({c}, {seed})",
    ValueKind.TIMESTAMPTZ: "timestamp_hash_extended({c} AT TIME ZONE 'UTC', {seed})",  # whatever the TimeZone
    ValueKind.TEXT: 'hashtextextended({c} COLLATE "C", {seed})',
    ValueKind.OTHER: 'hashtextextended({c}::text COLLATE "C", {seed})',
}


def _pg_value_hash(column: str, kind: ValueKind, fingerprint: int, position: int) -> str:
    """One column's term of PostgreSQL's source hash: the column's 64-bit hash seeded by the fingerprint and
    the column's position (so that two columns swapping values change the hash), its seed for a NULL. The
    terms are combined by XOR: PostgreSQL builds no joined text, and hashes a number, a date or a time as its
    value rather than its text: the server's CPU per 1M-row probe 0.49 -> 0.31 s (bench/README.md, session 11).
    Functions of PostgreSQL 11 and later (``timestamptz_hash_extended`` is newer: an instant is hashed as its
    UTC time). Text is hashed byte for byte (``COLLATE "C"``): under a nondeterministic collation ``A`` and
    ``a`` would hash alike, and a change of case would pass unseen."""
    seed = client_hash.term_seed(fingerprint, position)
    return f"coalesce({_PG_HASHES[kind].format(c=column, seed=f'{seed}::bigint')}, {seed}::bigint)"


def has_crc32c(dialect: sa.Dialect) -> bool:
    """Whether the server is MariaDB 10.8 or later, which has ``CRC32C`` (MySQL has not): known only to a
    dialect that connected (:func:`source_dialect`); any other gets the MD5 hash, which every server has."""
    version = tuple(getattr(dialect, "server_version_info", None) or ())
    return bool(getattr(dialect, "is_mariadb", False)) and version >= (10, 8)


def source_dialect(url: str | sa.URL) -> sa.Dialect:
    """The dialect that builds a source's queries. On MySQL/MariaDB it knows the server (it connected once
    per process and URL), which decides the source hash's expression (:func:`source_hash_sql`); every query
    of one run must be built by the same one, so that the hashes it stores and the ones it probes agree."""
    u = sa.make_url(url)
    if u.get_backend_name() not in ("mysql", "mariadb"):
        return u.get_dialect()()
    return _server_dialect(u.render_as_string(hide_password=False))


def _server_dialect(url: str) -> sa.Dialect:
    engine = source_engine(url)
    if engine.dialect.server_version_info is None:
        with engine.connect():  # the dialect reads the server's name and version on its first connection
            pass
    return engine.dialect


def adbc_uri(url: str | sa.URL) -> tuple[str, str] | None:
    """``(driver, uri)`` for an ADBC connection to ``url``, or None when ADBC does not serve it."""
    u = sa.make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite" and u.database not in (None, "", ":memory:"):
        return "sqlite", str(u.database)
    if backend == "postgresql":
        return "postgresql", u.set(drivername="postgresql").render_as_string(hide_password=False)
    return None


def connectorx_uri(url: str | sa.URL) -> str | None:
    """The ConnectorX URI of a MySQL/MariaDB ``url`` (any SQLAlchemy driver), or None for other databases
    or when ConnectorX is not installed."""
    u = sa.make_url(url)
    if u.get_backend_name() not in ("mysql", "mariadb") or importlib.util.find_spec("connectorx") is None:
        return None
    return u.set(drivername="mysql", query={}).render_as_string(hide_password=False)


def arrow_source(url: str | sa.URL) -> str | None:
    """Which Arrow-native reader serves ``url``: ``sqlite``, ``postgresql`` (ADBC), ``mysql`` (ConnectorX),
    or None (SQLAlchemy)."""
    target = adbc_uri(url)
    if target is not None:
        return target[0]
    return "mysql" if connectorx_uri(url) is not None else None


class _StreamCursor:
    """The part of an ADBC cursor the readers use, over ConnectorX: ``execute`` then ``fetch_record_batch``.

    ConnectorX's ``arrow_stream`` (batches of ``batch_rows`` as they arrive) holds the GIL while it waits for
    the server: every other thread of the run stops (measured: a Python loop ran at 9% of its speed during
    a read, 92% with ``arrow``). ``execute(..., whole=True)`` reads the result at once with ``arrow``, which
    releases it: for queries whose size is bounded (pages, see :func:`_adbc_cursor_batches`)."""

    def __init__(self, uri: str, dialect: sa.Dialect, batch_rows: int) -> None:
        self.uri, self.dialect, self.batch_rows = uri, dialect, batch_rows
        self._reader: pa.RecordBatchReader | None = None

    def __enter__(self) -> _StreamCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, sql: str, parameters: Any = None, *, whole: bool = False) -> None:
        import connectorx

        text, _ = _bound(sql, "literal", self.dialect)  # ConnectorX takes no parameters: see _bound
        session = list(MYSQL_SESSION)
        if whole:
            table: pa.Table = connectorx.read_sql(self.uri, text, return_type="arrow", pre_execution_query=session)
            self._reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(self.batch_rows))
            return
        self._reader = connectorx.read_sql(self.uri, text, return_type="arrow_stream", batch_size=self.batch_rows,
                                           pre_execution_query=session)  # fmt: skip

    def fetch_record_batch(self) -> pa.RecordBatchReader:
        assert self._reader is not None, "execute() first"
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _StreamConnection:
    """A MySQL "connection" for the readers: ConnectorX opens its own per query (cheap on a LAN: the reads
    are ranges of 32k rows or more)."""

    def __init__(self, url: str | sa.URL, batch_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        uri = connectorx_uri(url)
        if uri is None:
            raise ValueError("ConnectorX serves MySQL/MariaDB only (pip install connectorx)")
        self.uri, self.batch_rows = uri, batch_rows
        self.dialect = sa.make_url(url).get_dialect()()

    def cursor(self) -> _StreamCursor:
        return _StreamCursor(self.uri, self.dialect, self.batch_rows)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def arrow_connect(url: str | sa.URL, *, source_hash: bool = False) -> Iterator[Any]:
    """A connection of the Arrow-native reader that serves ``url`` (:func:`arrow_source`)."""
    if arrow_source(url) == "mysql":
        yield _StreamConnection(url)
        return
    with adbc_connect(url, source_hash=source_hash) as conn:
        yield conn


@functools.cache
def sqlite_hash_extension() -> str | None:
    """The path of the compiled SQLite extension that defines ``connectif_source_hash()``
    (``_sqlite_hash.c``), or None where it was not built (no compiler or no ``sqlite3ext.h``)."""
    spec = importlib.util.find_spec("connectif_sync._sqlite_hash")
    origin = spec.origin if spec is not None else None
    if origin is None or not origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return None
    return origin


@contextlib.contextmanager
def adbc_connect(url: str | sa.URL, *, source_hash: bool = False) -> Iterator[Any]:
    """An ADBC DB-API connection (SQLite file or PostgreSQL); ``source_hash`` loads the SQLite extension
    that defines ``connectif_source_hash()`` (see :func:`probe_query`)."""
    target = adbc_uri(url)
    if target is None:
        raise ValueError(f"no ADBC driver for {sa.make_url(url).render_as_string(hide_password=True)}")
    driver, uri = target
    if driver == "postgresql":
        with _pg_connection(uri) as conn:
            yield conn
        return
    import adbc_driver_sqlite.dbapi

    conn = adbc_driver_sqlite.dbapi.connect(uri)
    try:
        if source_hash:
            path = sqlite_hash_extension()
            if path is None:
                raise RuntimeError("connectif_sync._sqlite_hash was not built (needs a C compiler and sqlite3ext.h)")
            for option, value in (("enabled", "true"), ("path", path), ("entrypoint", "sqlite3_connectifhash_init")):
                conn.adbc_connection.set_options(**{f"adbc.sqlite.load_extension.{option}": value})
        yield conn
    finally:
        conn.close()


_PG_OPEN: dict[str, list[Any]] = {}  # uri -> the ADBC connections open on it now (see _pg_connection)
_PG_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def _pg_connection(uri: str) -> Iterator[Any]:
    """An ADBC PostgreSQL connection that shares its driver "database" with the connections open on the same
    URI (``adbc_clone``). Making that object reads the server's type catalog: 10-20 ms of every connection
    made on its own, 2-4 ms for one sharing it; a run opens three to five at once (the probe's, its readers').
    The database lives as long as one of its connections: a run's connections share it, the next run reads
    the catalog again (a type created since is known)."""
    import adbc_driver_postgresql.dbapi

    # Under the lock: a connection is cloned only while it is registered, so never while it closes; and of
    # readers starting together, the first makes the database and the others share it.
    with _PG_OPEN_LOCK:
        live = _PG_OPEN.get(uri)
        conn = live[0].adbc_clone() if live else adbc_driver_postgresql.dbapi.connect(uri)
        _PG_OPEN.setdefault(uri, []).append(conn)
    try:
        yield conn
    finally:
        with _PG_OPEN_LOCK:
            open_now = _PG_OPEN[uri]
            open_now.remove(conn)
            if not open_now:
                del _PG_OPEN[uri]
        conn.close()


class WarmSource:
    """A connection to a PostgreSQL source (ADBC) opened by a thread of its own as a run starts, and held
    until :meth:`close`: while the run checks its mapping, opens its state store and asks for its watermark,
    the driver reads the server's type catalog, and the run's own connections then share it (2-4 ms each,
    :func:`_pg_connection`) instead of the first reading it on the run's path: 10-20 ms of a 0.1-s watermark
    run (bench/README.md, session 15). Nothing for other sources. A connection that fails here is the run's
    own to report: its first read connects again and says why."""

    def __init__(self, url: str | sa.URL) -> None:
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if arrow_source(url) == "postgresql":
            self._thread = threading.Thread(target=self._hold, args=(url,), name="connectif-sync-warm", daemon=True)
            self._thread.start()

    def _hold(self, url: str | sa.URL) -> None:
        try:
            with adbc_connect(url):
                self._done.wait()
        except Exception:  # the run's own connection reports it
            return

    def close(self) -> None:
        """Let the connection go (the run's own hold the driver's catalog by then); safe to call twice."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> WarmSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Resume = Callable[[tuple[Any, ...]], str]
"""The query of the rows after some ``order_by`` values (see :func:`_adbc_cursor_batches`)."""


def _adbc_cursor_batches(
    conn: Any,
    url: str,
    sql: str,
    chunk_rows: int,
    resume: Resume | None = None,
    order_by: Sequence[str] = (),
    empty: bool = False,
    page: bool = False,
) -> Iterator[pa.Table]:
    """Run ``sql`` and yield its rows in tables of about ``chunk_rows``.

    ADBC's SQLite driver infers each column's type from the first batch of a result; a column that is
    NULL all through that batch becomes int64, and the first text value after it fails the read ("Type
    mismatch", a documented limitation of the driver). Such a read is resumed after the last row received,
    with ``resume(last order_by values)``: the new statement infers again from its own first batch.
    ``empty``: a result without rows yields one empty table (with the result's columns) rather than none.
    ``page``: on MySQL, read ``sql`` by pages of ``chunk_rows`` rows (``LIMIT``, then ``resume`` after the
    last row), each read whole, so that ConnectorX does not hold the GIL (:class:`_StreamCursor`); for queries
    whose ``order_by`` an index serves from any starting value (ranges of an integer primary key).
    """
    schema: pa.Schema | None = None
    yielded = False
    kind = arrow_source(url)
    paged = page and kind == "mysql" and resume is not None and bool(order_by)
    while sql:
        last: tuple[Any, ...] | None = None
        pending: list[pa.RecordBatch] = []
        rows = got = 0
        with conn.cursor() as cur:
            if kind == "sqlite":
                cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(chunk_rows)})
            if kind in ("sqlite", "postgresql"):  # ADBC binds; ConnectorX's cursor handles a Query itself
                text, params = _bound(sql, "qmark" if kind == "sqlite" else "dollar")
                cur.execute(text, params) if params else cur.execute(text)
            elif paged:
                limit = Query(f"{sql} LIMIT {chunk_rows}", sql.params if isinstance(sql, Query) else None)
                cur.execute(limit, whole=True)
            else:
                cur.execute(sql)
            reader = cur.fetch_record_batch()
            schema = schema or reader.schema
            try:
                for batch in reader:
                    pending.append(batch)
                    rows += batch.num_rows
                    got += batch.num_rows
                    if order_by and batch.num_rows:
                        last = tuple(batch.column(c)[batch.num_rows - 1].as_py() for c in order_by)
                    if rows >= chunk_rows:
                        yield from _pieces(pending, chunk_rows)
                        pending, rows, yielded = [], 0, True
                sql = resume(last) if paged and resume is not None and last is not None and got == chunk_rows else ""
            except Exception as exc:
                if resume is None or last is None or "type mismatch" not in str(exc).lower():
                    raise
                sql = resume(last)
        if pending:
            yield from _pieces(pending, chunk_rows)
            yielded = True
    if empty and not yielded and schema is not None:
        yield schema.empty_table()


def _pieces(batches: list[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """``batches`` as one table, or as slices of ``chunk_rows`` rows (no copy) when they hold more than two
    chunks: PostgreSQL's driver sizes its batches in bytes (about 16 MB), so one batch of a range larger than
    planned may hold many chunks' rows, and every stage after the read works on one chunk at a time."""
    table = pa.Table.from_batches(batches)
    if table.num_rows <= 2 * chunk_rows:
        yield table
        return
    for start in range(0, table.num_rows, chunk_rows):
        yield table.slice(start, chunk_rows)


def integer_ranges(url: str, mapping: Mapping, chunk_rows: int) -> list[tuple[int, int]] | None:
    """Cut a table source into ranges of about ``chunk_rows`` rows of its integer primary key, or None.

    Only for a table whose ``order_by`` is its single-column primary key (never NULL) with integer values:
    then reading the ranges one after another gives exactly the rows, in exactly the order, of the whole
    ``ORDER BY``, and several connections can read them at once. The cut assumes keys spread evenly
    between their minimum and maximum; gaps only make some ranges smaller or larger (each is still read in
    chunks, so memory stays bounded). How many rows there are is the database's estimate where it keeps one
    (:func:`_row_count`): it sizes the ranges, and whatever its value the ranges cover every key.
    """
    if mapping.table is None or len(mapping.order_by) != 1:
        return None
    with source_engine(url).connect() as conn:
        schema, _, table = mapping.table.rpartition(".")
        if mapping.source_key is not None:  # read with the columns (check_source_columns): no reflection
            pk = list(mapping.source_key)
        else:
            pk = sa.inspect(conn).get_pk_constraint(table, schema=schema or None).get("constrained_columns") or []
        if pk != [mapping.order_by[0]]:
            return None
        q = conn.dialect.identifier_preparer.quote
        col, src = q(pk[0]), quoted_table(mapping.table, conn.dialect)
        # two subqueries: each MIN/MAX is then one index probe
        lo, hi = conn.execute(sa.text(f"SELECT (SELECT MIN({col}) FROM {src}), (SELECT MAX({col}) FROM {src})")).one()
        count = _row_count(conn, mapping.table, chunk_rows)
    if not (isinstance(lo, int) and isinstance(hi, int)) or count <= 2 * chunk_rows:
        return None
    parts = -(-count // chunk_rows)
    width = max(1, -(-(hi - lo + 1) // parts))
    return [(start, start + width) for start in range(lo, hi + 1, width)]


def _row_count(conn: sa.Connection, table: str, chunk_rows: int) -> int:
    """How many rows ``table`` has, to size :func:`integer_ranges`: PostgreSQL's and MySQL's own estimate
    (``pg_class.reltuples``, ``information_schema.TABLES.TABLE_ROWS``, kept by ANALYZE and autovacuum or
    InnoDB's statistics), else ``COUNT(*)``: no estimate yet, another database, or an estimate small enough
    that the table may be read in one go (counted to be sure, cheap if it is small).

    ``COUNT(*)`` reads the whole table before any read can start: 0.1-0.15 s per million rows on PostgreSQL,
    0.2-0.4 s on MariaDB (0.4-0.55 s for 3 million), a tenth of a full scan. An estimate off by any amount
    only makes the ranges larger or smaller, each still read in chunks (:func:`_pieces`).
    """
    dialect = conn.dialect
    schema, _, name = table.rpartition(".")
    estimate: Any = None
    if dialect.name == "postgresql":  # as the planner does: rows per page at the last ANALYZE, times pages now
        sql = (
            "SELECT reltuples / NULLIF(relpages, 0) * (pg_relation_size(oid) / current_setting('block_size')::int) "
            "FROM pg_class WHERE oid = to_regclass(:name) AND reltuples > 0"
        )
        estimate = conn.execute(sa.text(sql), {"name": quoted_table(table, dialect)}).scalar()
    elif dialect.name in ("mysql", "mariadb"):
        sql = (
            "SELECT TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"
        )
        estimate = conn.execute(sa.text(sql), {"schema": schema or None, "name": name}).scalar()
    if estimate is not None and estimate > 2 * chunk_rows:
        # A tenth more: ranges a little smaller than a chunk rather than a little larger (a range a few rows
        # over a chunk is read as a chunk and a sliver, and every stage pays its fixed cost per piece).
        return int(estimate * 1.1) + 1
    return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {quoted_table(table, dialect)}")).scalar_one())


def probe_query(
    mapping: Mapping, dialect: sa.Dialect, fingerprint: int, *, versions: bool = False, **filters: Any
) -> str:
    """A query of each row's order column and source hash only (column :data:`PROBE_HASH_COLUMN`; the
    run's latest ``updated_at`` is one query of its own, :func:`latest_update_query`), computed by the
    database: on PostgreSQL and MySQL by
    :func:`source_hash_sql` (the value every read of the sync adds); on SQLite by the
    ``connectif_source_hash()`` extension (:func:`adbc_connect` with ``source_hash=True``), the same value as
    ``connectif_sync.diff.source_hashes`` of the row read in full (NULL for a row with REAL or BLOB values).
    ``fingerprint`` is the mapping's, as a signed 64-bit integer; ``filters`` are :func:`build_query`'s.
    With ``versions`` (:func:`row_versions`), each row's PostgreSQL row version instead of a hash: the reader
    makes the source hashes (:func:`connectif_sync.client_hash.finish_versions`), and the server reads no value.
    """
    q = dialect.identifier_preparer.quote
    cols = [q(mapping.order_by[0])]
    if versions:
        return build_query(mapping, dialect, select=", ".join([*cols, client_hash.row_version_sql(q)]), **filters)
    expr = source_hash_sql(mapping, dialect, fingerprint)
    if expr is None:
        hashed = ", ".join(q(c) for c in mapping.source_columns() if c != mapping.updated_at)
        expr = f"connectif_source_hash({int(fingerprint)}, {hashed})"
    select = ", ".join(cols) + f", {expr} AS {q(PROBE_HASH_COLUMN)}"
    return build_query(mapping, dialect, select=select, **filters)


def latest_update_query(mapping: Mapping, dialect: sa.Dialect) -> str | None:
    """The latest ``updated_at`` of a table source, as a one-row query of that column (None without a table
    or an ``updated_at``). A probe reads it instead of every row's: one index probe where the column is
    indexed (as incremental runs want it), and a row's text conversion less per row everywhere."""
    if mapping.table is None or not mapping.updated_at:
        return None
    q = dialect.identifier_preparer.quote
    return f"SELECT MAX({q(mapping.updated_at)}) AS {q(mapping.updated_at)} FROM {quoted_table(mapping.table, dialect)}"


def read_table(
    conn: Any, url: str, sql: str, chunk_rows: int, resume: Resume | None = None, order_by: Sequence[str] = ()
) -> pa.Table:
    """All rows of ``sql`` as one table (for the few rows a probe found unconfirmed)."""
    return pa.concat_tables(_adbc_cursor_batches(conn, url, sql, chunk_rows, resume, order_by, empty=True, page=True))


def read_rows(conn: Any, url: str, mapping: Mapping, dialect: sa.Dialect, chunk_rows: int, **filters: Any) -> pa.Table:
    """All rows of :func:`build_query`'s query with ``filters``, as one table (resumed like any read), with
    their source hashes when ``filters`` has ``source_hash`` (finished here: :func:`client_hashed`)."""
    hashed = filters.get("source_hash") is not None
    client = client_hashed(url, mapping) if hashed else frozenset()
    versions = hashed and row_versions(url, mapping)
    if client or versions:
        filters = {**filters, "client_hashed": client, "versions": versions}
    table = read_table(
        conn, url, build_query(mapping, dialect, **filters), chunk_rows, resume_query(mapping, dialect, **filters),
        mapping.order_by,
    )  # fmt: skip
    return _finish(url, mapping, filters["source_hash"], client, versions, table) if client or versions else table


def client_hashed(url: str | sa.URL, mapping: Mapping) -> frozenset[str]:
    """The columns whose source-hash terms a read of whole rows through the Arrow readers computes itself
    rather than the database (:mod:`connectif_sync.client_hash`): PostgreSQL's by kind, MariaDB 10.8+'s all or
    none; none elsewhere."""
    reader = arrow_source(url)
    if reader == "postgresql":
        return frozenset() if row_versions(url, mapping) else client_hash.pg_columns(mapping)
    if reader == "mysql" and has_crc32c(source_dialect(url)):
        return client_hash.mariadb_columns(mapping)
    return frozenset()


def row_versions(url: str | sa.URL, mapping: Mapping) -> bool:
    """Whether the sync's reads of ``mapping`` through the Arrow readers take PostgreSQL's row versions as the
    rows' source hashes (:func:`connectif_sync.client_hash.version_tokens`): a plain table whose system columns
    the user may read (:attr:`Mapping.source_oid`). A full scan's probe then reads each row's key and version
    only, where the database would otherwise unpack every row and hash each value: the server's CPU per
    million-row probe about 0.45 -> 0.28 s (bench/README.md, session 16). Reads through SQLAlchemy keep the
    value hash the database computes (:func:`source_hash_sql`)."""
    return mapping.source_oid is not None and arrow_source(url) == "postgresql"


def _finish(
    url: str | sa.URL, mapping: Mapping, fingerprint: int, client: frozenset[str], versions: bool, table: pa.Table
) -> pa.Table:
    """``table`` with its source hashes finished by :mod:`connectif_sync.client_hash`."""
    if versions:
        return client_hash.finish_versions(table, mapping, fingerprint, PROBE_HASH_COLUMN)
    if arrow_source(url) == "mysql":
        return client_hash.finish_mariadb(table, mapping, fingerprint, PROBE_HASH_COLUMN)
    return client_hash.finish_pg(table, mapping, fingerprint, client, PROBE_HASH_COLUMN)


class RangeReads:
    """The chunks of ``sqls`` in order, read by ``readers`` ADBC connections at once, from the moment it is
    made: the caller can do other work while the first queries run (the probe checks its first range
    meanwhile); whoever makes one closes it, read or not.

    Query ``i`` is read by thread ``i % readers``, each with its own connection and a one-chunk queue; the
    consumer takes query 0's chunks, then query 1's, and so on, so the order is exactly that of reading the
    queries one after another, while the next queries are already being read. ``transform(conn, chunk)``, when
    given, runs in the reader thread (with its connection) and the items it gives are yielded instead of the
    chunk; ``source_hash`` loads the source-hash extension (:func:`adbc_connect`). Errors are re-raised in the
    consumer. :meth:`close` (or leaving a ``with`` block) stops the threads, whether the chunks were read or not.
    """

    def __init__(
        self,
        url: str,
        sqls: Sequence[str],
        chunk_rows: int,
        readers: int,
        resumes: list[Resume] | None = None,
        order_by: Sequence[str] = (),
        transform: Callable[[Any, pa.Table], Iterable[Any]] | None = None,
        source_hash: bool = False,
    ) -> None:  # fmt: skip
        self.count = len(sqls)
        self.readers = max(1, min(readers, len(sqls)))
        self.handoff = _Handoff(self.readers, 1)
        handoff, n = self.handoff, self.readers

        def work(w: int) -> None:
            try:
                with arrow_connect(url, source_hash=source_hash) as conn:
                    for i in range(w, len(sqls), n):
                        resume = resumes[i] if resumes is not None else None
                        for table in _adbc_cursor_batches(conn, url, sqls[i], chunk_rows, resume, order_by, page=True):
                            for item in transform(conn, table) if transform is not None else (table,):
                                if not handoff.put(w, item):
                                    return
                        if not handoff.put(w, _DONE):
                            return
            except BaseException as exc:  # handed to the consumer
                handoff.put(w, exc)

        handoff.start(work, "connectif-sync-read")

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.count):
            yield from self.handoff.items(i % self.readers)

    def close(self) -> None:
        self.handoff.close()

    def __enter__(self) -> RangeReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sqlalchemy_batches(url: str, sql: str, chunk_rows: int) -> Iterator[pa.Table]:
    with source_engine(url).connect() as conn:
        if conn.dialect.name in ("mysql", "mariadb"):
            for statement in MYSQL_SESSION:  # as the Arrow path
                conn.exec_driver_sql(statement)
        text, params = _bound(sql, "named")
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(sa.text(text), params)
        names = list(result.keys())
        for part in result.partitions(chunk_rows):
            cols: list[list[Any]] = [list(c) for c in zip(*part, strict=True)] if part else [[] for _ in names]
            yield pa.table({n: pa.array(c, from_pandas=True) for n, c in zip(names, cols, strict=True)})


_DONE = object()


T = TypeVar("T")


class _Handoff:
    """Threads handing items to one consumer through bounded queues (``prefetch``, ``RangeReads``).

    A producer's ``put`` gives up once the consumer stopped; an exception put in a queue is re-raised by the
    consumer; ``close`` stops the producers and drains their queues so that none stays blocked.
    """

    def __init__(self, queues: int, depth: int) -> None:
        import queue
        import threading

        self.queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=depth) for _ in range(queues)]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, target: Callable[..., None], name: str) -> None:
        import threading

        for w in range(len(self.queues)):
            t = threading.Thread(target=target, args=(w,), name=f"{name}-{w}" if len(self.queues) > 1 else name,
                                 daemon=True)  # fmt: skip
            self.threads.append(t)
            t.start()

    def put(self, w: int, item: Any) -> bool:
        import queue

        while not self.stop.is_set():
            try:
                self.queues[w].put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def items(self, w: int) -> Iterator[Any]:
        """Queue ``w``'s items up to its next end mark."""
        while True:
            item = self.queues[w].get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        import queue

        self.stop.set()
        for t, q in zip(self.threads, self.queues, strict=True):
            while t.is_alive():  # drain so that a blocked put() sees the stop flag
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.05)


def prefetch(chunks: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Pull ``chunks`` in a background thread, ``depth`` ahead of the consumer.

    The database drivers and pyarrow release the GIL while they work, so reading the next chunk overlaps
    with shaping the current one (two cores: about the time of the slower of the two instead of the sum).
    ``depth`` 1 keeps at most three chunks alive (being read, queued, being processed).
    Errors are re-raised in the consumer; closing the consumer stops the thread.
    """
    handoff = _Handoff(1, depth)

    def work(w: int) -> None:
        try:
            for chunk in chunks:
                if not handoff.put(w, chunk):
                    break
        except BaseException as exc:  # handed to the consumer
            handoff.put(w, exc)
        finally:
            handoff.put(w, _DONE)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    handoff.start(work, "connectif-sync-extract")
    try:
        yield from handoff.items(0)
    finally:
        handoff.close()


def _resume_query(mapping: Mapping, dialect: sa.Dialect, filters: dict[str, Any], after: tuple[Any, ...]) -> str:
    return build_query(mapping, dialect, after=after, **filters)


def resume_query(mapping: Mapping, dialect: sa.Dialect, **filters: Any) -> Resume:
    """How to resume :func:`build_query`'s query (same ``filters``) after some ``order_by`` values."""
    return partial(_resume_query, mapping, dialect, filters)


def _resume_probe(
    mapping: Mapping, dialect: sa.Dialect, fingerprint: int, filters: dict[str, Any], after: tuple[Any, ...]
) -> str:
    return probe_query(mapping, dialect, fingerprint, after=after, **filters)


def resume_probe(mapping: Mapping, dialect: sa.Dialect, fingerprint: int, **filters: Any) -> Resume:
    """How to resume :func:`probe_query`'s query (same ``filters``) after some ``order_by`` values."""
    return partial(_resume_probe, mapping, dialect, fingerprint, filters)


def extract_arrow(
    source_url: str,
    mapping: Mapping,
    *,
    since: datetime | None = None,
    window: Window | None = None,
    keys: list[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    path: str = "auto",
    readers: int = DEFAULT_READERS,
    source_hash: int | None = None,
) -> Iterator[pa.Table]:
    """Stream the mapping's source as Arrow tables of about ``chunk_rows`` rows.

    ``path`` is ``auto`` (an Arrow-native driver where one serves the database: :func:`arrow_source`),
    ``adbc`` (that driver, required) or ``sqlalchemy``. A full read of a table through
    ADBC is cut into ranges of its integer primary key (:func:`integer_ranges`) that ``readers``
    connections read at once, in order; each connection sees the database as of its own queries, so rows
    written during the read may or may not be in it, as with any read that is not one transaction.
    ``source_hash`` (the mapping's fingerprint, signed): each table also has the rows' source hashes computed
    by the database, where it can (:func:`source_hash_sql`), or by this process from the values read, where it
    can compute them exactly (:func:`client_hashed`), or from PostgreSQL's row versions (:func:`row_versions`).
    """
    if path not in ("auto", "adbc", "sqlalchemy"):
        raise ValueError(f"path must be auto, adbc or sqlalchemy, got {path!r}")
    use_adbc = path == "adbc" or (path == "auto" and arrow_source(source_url) is not None)
    dialect = source_dialect(source_url)
    client = client_hashed(source_url, mapping) if use_adbc and source_hash is not None else frozenset()
    versions = use_adbc and source_hash is not None and row_versions(source_url, mapping)
    hashed: dict[str, Any] = {"source_hash": source_hash, "client_hashed": client, "versions": versions}
    finish = (
        partial(_finish, source_url, mapping, source_hash, client, versions)
        if source_hash is not None and (client or versions)
        else None
    )
    sql = build_query(mapping, dialect, since=since, window=window, keys=keys, **hashed)
    whole = since is None and window is None and keys is None
    ranges = integer_ranges(source_url, mapping, chunk_rows) if use_adbc and whole and readers > 1 else None
    if ranges:
        sqls = [build_query(mapping, dialect, id_range=r, **hashed) for r in ranges]
        resumes = [resume_query(mapping, dialect, id_range=r, **hashed) for r in ranges]
        with RangeReads(source_url, sqls, chunk_rows, readers, resumes, mapping.order_by) as reads:
            # Finished here, not by the readers: numpy's temporaries in their threads cost 15 MB more at the peak
            # of a 3M-row MySQL run (glibc's per-thread arenas), for no gain in time.
            yield from (finish(t) for t in reads) if finish is not None else reads
    elif use_adbc:
        resume = resume_query(mapping, dialect, since=since, window=window, keys=keys, **hashed)
        with arrow_connect(source_url) as conn:
            for table in _adbc_cursor_batches(conn, source_url, sql, chunk_rows, resume, mapping.order_by):
                yield finish(table) if finish is not None else table
    else:
        yield from _sqlalchemy_batches(source_url, sql, chunk_rows)


def extract(
    source_url: str,
    mapping: Mapping,
    *,
    since: datetime | None = None,
    window: Window | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    path: str = "auto",
    readers: int = DEFAULT_READERS,
) -> Iterator[pd.DataFrame]:
    """Stream the mapping's source as pandas DataFrames with Arrow-backed dtypes (see :func:`extract_arrow`)."""
    import pandas as pd  # imported here: the pipeline itself works on Arrow and does not need pandas' memory

    tables = extract_arrow(
        source_url, mapping, since=since, window=window, chunk_rows=chunk_rows, path=path, readers=readers
    )
    for table in tables:
        yield table.to_pandas(types_mapper=pd.ArrowDtype)
