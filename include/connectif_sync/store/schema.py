"""The state store's tables, and bringing a store created by an earlier version up to them.

Why a module of its own: every job of the store (the diff index, the commit ledger, suppression, purchases,
uploads, erasures, alerts, run history) shares one ``MetaData``, one creation path and one in-place migration,
so that a store is created and upgraded in one transaction whatever job opens it first. Table names are
persisted identifiers: they never change.

A SQL database reached through SQLAlchemy: a SQLite file by default (standalone), PostgreSQL in
deployments. Tables (all prefixed ``connectif_sync_``):

``state``      object, key, key_hash, row_hash (64-bit hash of the CSV values sent), source_hash (of the
               source values and the mapping: a full scan skips shaping rows whose source is unchanged),
               source_updated_at, confirmed_at: rows confirmed by versions before ``state_blocks`` (read,
               and folded into a block by the first compaction; no longer written row by row).
``state_blocks`` what Connectif confirmed since, appended **only** by :meth:`StateStore.confirm_file` (so
               only after Connectif confirmed the rows): one row per block of up to 100,000 confirmed rows,
               an Arrow IPC file of the ``state`` columns. A later block's row replaces an earlier one of the
               same key hash, and any block replaces ``state``. A row missing from both, or with another
               hash, is sent again. Why blocks: committing a million rows is a few large inserts instead of
               a million B-tree upserts (``store/blocks.py``).
``files``      every chunk file a run wrote: status ``pending`` until confirmed (``confirmed``), or
               ``superseded`` when a later run re-extracted its rows. Pending files hold back the watermark.
``pending``    rows that Connectif rejected in an import's error report (line, reason): they are not in
               ``state``, so they go again next run, and they hold back the watermark until they pass.
``rejected``   rows our validation set aside (key, source_ref, field, reason, value), per run; the last
               :data:`KEEP_REJECTED_RUNS` runs per object are kept.
``runs``       one row per run: mode, watermark used, high-water mark reached, the JSON report.
``alerts``     the last state of each alert (source, kind): active or not, so that people are told when it
               changes (raised, cleared) and not on every run.
``purchases``  purchase ids sent through the API and their outcome, so that a re-run never resends one.
``suppressed`` keys that must never be sent again whatever the source says, with the reason: a contact
               erased at its owner's request (the erasure DAG adds it). Syncs set such rows aside (reason
               ``suppressed: ...``), full resyncs included, until :meth:`StateStore.unsuppress`.
``erasures``   the outcome of each erasure request Connectif answered (``deleted``, or ``absent``: a 404), and
               the job run (all its tries) that finished it: a retry whose delete answers 404 because an
               earlier try deleted the contact still counts it as deleted.
``run_history`` one row per **Airflow** run of a Connectif DAG (dag_id, run_id): its typed
               :class:`~connectif_sync.contract.RunSummary` as JSON plus the counts the pages chart, written by
               the DAG's ``report`` task. Apart from ``runs`` on purpose: ``runs`` holds the library's runs (one
               per try and per call, keyed by the library run id), this one the Airflow run a user looks at,
               and it survives XCom clean-up. The monitoring pages read it.
``snapshots``  (SQLite only) a copy of one object's confirmed hashes as one sorted binary array, rewritten in the
               same transaction as every confirmation: a full-scan diff reads one value instead of
               3 x 1,000,000 integers through ``sqlite3`` (about 3 s, the dominant cost of a second run).
               ``state`` and ``state_blocks`` stay the truth: a missing snapshot is rebuilt from them.
``uploads``    every upload of a chunk file to Connectif (content hash, start, import id once known), written
               *before* the upload starts: a retry, or a later run that wrote a file of the same content,
               re-attaches to the import an earlier try made instead of importing the same rows again
               (:meth:`StateStore.earlier_upload`).

Bulk paths: confirmed rows are written as blocks on every database (a few large inserts per million rows);
on PostgreSQL, ADBC (COPY) reads a million hashes of ``state`` in about a second. On SQLite the store
deliberately uses only Python's ``sqlite3`` (through SQLAlchemy): two SQLite
libraries in one process (ADBC bundles its own) must not share a database file that is written, because
closing one library's connection drops the other's POSIX locks (SQLite's documented corruption case).
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

DEFAULT_STATE_URL = "sqlite:///connectif_sync_state.db"
_LOOKUP_BATCH = 500

metadata = sa.MetaData()

#: Keys, paths and source references: unbounded text. A key is whatever the source holds (a 1,227-character
#: email is one), and a bound on it crashed a run on PostgreSQL (``varchar(1000)``); stores created before
#: are widened by :func:`_migrate`. Other databases keep ``VARCHAR(1000)``, which SQLite does not enforce.
_TEXT_KEY = sa.String(1000).with_variant(sa.Text(), "postgresql")

state_table = sa.Table(
    "connectif_sync_state",
    metadata,
    sa.Column("object", sa.String(32), primary_key=True),
    sa.Column("key", _TEXT_KEY, primary_key=True),
    sa.Column("key_hash", sa.BigInteger, nullable=False),
    sa.Column("row_hash", sa.BigInteger, nullable=False),
    sa.Column("source_hash", sa.BigInteger),
    sa.Column("source_updated_at", sa.String(32)),
    sa.Column("confirmed_at", sa.DateTime, nullable=False),
    # Bit i set: output column i (mapping order, first 63) was empty in the row Connectif confirmed. The
    # guardrail's "filled -> empty" rule reads it for the few changed rows that would empty a field.
    sa.Column("empty_mask", sa.BigInteger),
    # Covering index: a full-scan diff reads the three hashes from the index alone.
    sa.Index("ix_connectif_sync_state_hashes", "object", "key_hash", "row_hash", "source_hash"),
    sqlite_with_rowid=False,
)
files_table = sa.Table(
    "connectif_sync_files",
    metadata,
    sa.Column("path", _TEXT_KEY, primary_key=True),
    sa.Column("object", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("partition", sa.String(200)),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("min_updated_at", sa.String(32)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("confirmed_at", sa.DateTime),
    sa.Column("confirmed_rows", sa.Integer),
    sa.Column("failed_rows", sa.Integer),
    # Why a finished import could not confirm this file (e.g. its error report was missing); added by migration.
    sa.Column("unconfirmed_reason", sa.Text),
)
pending_table = sa.Table(
    "connectif_sync_pending",
    metadata,
    sa.Column("object", sa.String(32), primary_key=True),
    sa.Column("key", _TEXT_KEY, primary_key=True),
    sa.Column("path", _TEXT_KEY),
    sa.Column("line", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("source_updated_at", sa.String(32)),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
)
rejected_table = sa.Table(
    "connectif_sync_rejected",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("object", sa.String(32), nullable=False),
    sa.Column("key", _TEXT_KEY),
    sa.Column("source_ref", _TEXT_KEY),
    sa.Column("field", sa.String(200)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("value", sa.Text),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
)
#: Indexes of the rejected-rows browser (keyset pagination per run, filters, key search). Created on existing
#: stores too (``create_all`` only creates the indexes of tables it creates).
REJECTED_BROWSE_INDEXES = (
    sa.Index(
        "ix_connectif_sync_rejected_run_id", rejected_table.c.object, rejected_table.c.run_id, rejected_table.c.id
    ),
    sa.Index(
        "ix_connectif_sync_rejected_reason",
        rejected_table.c.object,
        rejected_table.c.run_id,
        rejected_table.c.reason,
        rejected_table.c.id,
    ),
    sa.Index(
        "ix_connectif_sync_rejected_field",
        rejected_table.c.object,
        rejected_table.c.run_id,
        rejected_table.c.field,
        rejected_table.c.id,
    ),
    sa.Index("ix_connectif_sync_rejected_key", rejected_table.c.object, rejected_table.c.key, rejected_table.c.id),
)
runs_table = sa.Table(
    "connectif_sync_runs",
    metadata,
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("object", sa.String(32), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("since", sa.String(32)),
    sa.Column("high_water", sa.String(32)),
    sa.Column("report", sa.Text),
)
#: Binary columns that may hold megabytes: MySQL's ``BLOB`` stops at 64 KB.
_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

state_blocks_table = sa.Table(
    "connectif_sync_state_blocks",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("object", sa.String(32), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    # The confirmed rows as an Arrow IPC file: the columns of ``state`` but object and time
    sa.Column("data", _BLOB, nullable=False),
    sa.Column("confirmed_at", sa.DateTime, nullable=False),
    sa.Index("ix_connectif_sync_state_blocks_object", "object", "seq"),
)
snapshots_table = sa.Table(
    "connectif_sync_snapshots",
    metadata,
    sa.Column("object", sa.String(32), primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    # (key_hash, row_hash, source_hash or 0) per key as little-endian int64, sorted by key hash
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
suppressed_table = sa.Table(
    "connectif_sync_suppressed",
    metadata,
    sa.Column("object", sa.String(32), primary_key=True),
    sa.Column("key", _TEXT_KEY, primary_key=True),
    sa.Column("key_hash", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("suppressed_at", sa.DateTime, nullable=False),
)
alerts_table = sa.Table(
    "connectif_sync_alerts",
    metadata,
    sa.Column("source", sa.String(250), primary_key=True),  # a DAG id (or an object)
    sa.Column("kind", sa.String(64), primary_key=True),  # failure | late | rejected_share | ...
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("changed_at", sa.DateTime, nullable=False),
)
purchases_table = sa.Table(
    "connectif_sync_purchases",
    metadata,
    sa.Column("purchase_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

erasures_table = sa.Table(
    "connectif_sync_erasures",
    metadata,
    sa.Column("request_id", sa.String(200), primary_key=True),
    sa.Column("email", _TEXT_KEY, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("run", sa.String(250), nullable=False),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
    sa.Index("ix_connectif_sync_erasures_run", "run"),
)

uploads_table = sa.Table(
    "connectif_sync_uploads",
    metadata,
    sa.Column("path", _TEXT_KEY, primary_key=True),
    sa.Column("object", sa.String(32)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer),
    sa.Column("import_id", sa.String(64)),
    sa.Column("started_at", sa.Float, nullable=False),  # epoch seconds of the upload's start
    sa.Column("status", sa.String(16), nullable=False),  # uploading | imported | confirmed
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_connectif_sync_uploads_content", "content_hash"),
)

run_history_table = sa.Table(
    "connectif_sync_run_history",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("object", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("library_run_id", sa.String(250)),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
    sa.Column("to_send", sa.BigInteger, nullable=False),
    sa.Column("sent", sa.BigInteger, nullable=False),
    sa.Column("changed", sa.BigInteger, nullable=False),
    sa.Column("unchanged", sa.BigInteger, nullable=False),
    sa.Column("rejected", sa.BigInteger, nullable=False),
    sa.Column("api_requests", sa.Integer),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Index("ix_connectif_sync_run_history_object", "object", "recorded_at"),
)


def _no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters: a rejected value shows them as ``\\x00`` instead."""
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _run_clock() -> datetime:
    """Run start/finish times keep their microseconds: "the latest run" must not be a tie between two runs
    of the same second (a retried task, a test, a backfill)."""
    return datetime.now(UTC).replace(tzinfo=None)


_CREATE_LOCK = 0x636F6E6E_65637466  # pg_advisory_xact_lock key: "connectf" as a 64-bit integer


def _create_tables(engine: sa.Engine, attempts: int = 3) -> None:
    """Create the store's tables, safe when several processes open a fresh store at the same moment.

    ``create_all`` checks then creates, so two workers racing on a fresh PostgreSQL database both see no table
    and one fails (``UniqueViolation`` on ``pg_type``). On PostgreSQL the check and the creation run under a
    transaction-scoped advisory lock, so they are serialised; on any database an "already exists" error from a
    concurrent creator is retried, and the retry's check then finds the tables.
    """
    if _schema_current(engine):
        return
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK})
                metadata.create_all(conn)
                _migrate(conn)
                for index in REJECTED_BROWSE_INDEXES:
                    index.create(conn, checkfirst=True)
                _drop_retired_indexes(conn)
                _write_schema_mark(conn)
            return
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
            # IntegrityError: the pg_type/pg_class unique index of a concurrently created table.
            text = str(exc).lower()
            concurrent = isinstance(exc, sa.exc.IntegrityError) or any(
                m in text for m in ("already exists", "duplicate column")
            )
            if not concurrent or attempt == attempts - 1:
                raise


@functools.cache
def schema_mark() -> int:
    """A positive 31-bit number that changes with the schema: every table's columns (name, type, nullable,
    key) and indexes, the browser's indexes and the retired ones. Computed from the definitions (all in this
    module), so it follows every change to them without a version to bump by hand."""
    parts = []
    for table in metadata.sorted_tables:
        parts.append(f"T {table.name}")
        parts += [f"C {c.name} {c.type!r} {c.nullable} {c.primary_key}" for c in table.columns]
        parts += sorted(f"I {ix.name} {[c.name for c in ix.columns]} {ix.unique}" for ix in table.indexes)
    parts += [f"B {ix.name} {[c.name for c in ix.columns]}" for ix in REJECTED_BROWSE_INDEXES]
    parts += [f"R {t} {names}" for t, names in sorted(RETIRED_INDEXES.items())]
    digest = hashlib.sha256("\n".join(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


_MARK_TABLE = "connectif_sync_runs"  # PostgreSQL keeps the mark as this table's comment
_MARK_PREFIX = "connectif_sync schema "


def _schema_current(engine: sa.Engine) -> bool:
    """Whether the store was last created or upgraded to this very schema (its mark is :func:`schema_mark`,
    written by :func:`_create_tables`): then opening it checks nothing more. The checks inspect every table,
    column and index (4-5 ms on a SQLite file, a twentieth of an incremental run of 10,000 rows, and a dozen
    round trips to a PostgreSQL server; bench/README.md, session 14), and every task and command opens the
    store. A store of any other version (older, newer, or before the mark) takes the full path, which only
    adds what is missing. The mark: SQLite's ``user_version``; PostgreSQL's comment on ``connectif_sync_runs``;
    other databases have none (always the full path)."""
    if engine.dialect.name not in ("sqlite", "postgresql"):
        return False
    with engine.connect() as conn:
        return _read_schema_mark(conn) == schema_mark()


def _read_schema_mark(conn: sa.Connection) -> int | None:
    if conn.dialect.name == "sqlite":
        return int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
    comment = conn.execute(sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"), {"t": _MARK_TABLE}).scalar()
    digits = comment.removeprefix(_MARK_PREFIX) if isinstance(comment, str) else ""
    return int(digits) if comment != digits and digits.isdigit() else None


def _write_schema_mark(conn: sa.Connection) -> None:
    """Record :func:`schema_mark` in the store, in the transaction that brought it up to this schema."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA user_version = {schema_mark()}")
    elif conn.dialect.name == "postgresql":
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"COMMENT ON TABLE {_MARK_TABLE} IS '{_MARK_PREFIX}{schema_mark()}'")
        except sa.exc.DBAPIError as exc:
            # A role that may write the tables but does not own them (a deployment's least privilege) cannot
            # comment on them: its openings keep checking the schema, as before the mark.
            if getattr(exc.orig, "pgcode", None) != "42501":  # insufficient_privilege
                raise


RETIRED_INDEXES = {rejected_table.name: ("ix_connectif_sync_rejected_run",)}
"""Indexes earlier versions created, dropped on opening. ``(object, run_id)`` of the rejected rows is the
prefix of ``ix_connectif_sync_rejected_run_id`` (the same entries on SQLite, whose indexes end with the rowid),
which serves every query it served: each rejected row stored updated one index more, a sixth of the cost of
storing a dirty source's 10,000 rejected rows per run (bench/README.md, session 14)."""


def _drop_retired_indexes(conn: sa.Connection) -> None:
    """Drop the :data:`RETIRED_INDEXES` a store still has (inspected first: ``DROP INDEX IF EXISTS`` is not
    MySQL's)."""
    inspector = sa.inspect(conn)
    for table, names in RETIRED_INDEXES.items():
        present = {ix["name"] for ix in inspector.get_indexes(table)}
        for name in names:
            if name in present:
                conn.exec_driver_sql(
                    f"DROP INDEX {name} ON {table}"
                    if conn.dialect.name in ("mysql", "mariadb")
                    else f"DROP INDEX {name}"
                )


def _migrate(conn: sa.Connection) -> None:
    """Bring a store created by an earlier version up to this schema, in place and keeping every row.

    * Columns added since (all nullable) are added with ``ALTER TABLE ... ADD COLUMN``.
    * PostgreSQL: key, path and source-reference columns that are still ``varchar(n)`` become ``text``. The
      two types share their storage, so PostgreSQL changes the catalogue only (no table rewrite), and the
      primary keys and indexes stay valid.
    Runs under the creation lock of :func:`_create_tables` (PostgreSQL) or in its transaction (SQLite).
    """
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        existing = {c["name"]: c for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing:
                continue
            if not column.nullable:
                continue  # every version had its required columns: a table without one is not ours to change
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
        if conn.dialect.name != "postgresql":
            continue
        for column in table.columns:
            found = existing.get(column.name)
            if found is None or column.type.compile(dialect=conn.dialect) != "TEXT":
                continue
            if isinstance(found["type"], sa.String) and getattr(found["type"], "length", None) is not None:
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ALTER COLUMN "{column.name}" TYPE text')


SQLITE_PAGE_SIZE = 32768
"""Bytes per page of a new SQLite store (SQLite's default is 4096). Most of a store's bytes are blocks and
snapshots of a few MB each, stored as chains of overflow pages: with 8x fewer, larger pages, confirming a
million rows went 1.0 -> 0.7 s (bench/README.md, session 7). A store keeps the page size it was created
with (SQLite cannot change it in WAL mode)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL: readers never block the writer and each commit is one append; NORMAL sync keeps it safe from
    corruption (a power cut may forget the last commits, which then are simply sent again). The page size
    only applies to a new, empty file, so it comes first."""
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def parse_ts(value: str | datetime) -> datetime:
    """A stored timestamp text (``YYYY-MM-DD HH:MM:SS[.f]``, ``T`` or space) as a naive datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(value.strip().replace("Z", "")).replace(tzinfo=None)
