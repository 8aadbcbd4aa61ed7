"""The state store: what Connectif has confirmed, per object and key, and the rows set aside.

A SQL database reached through SQLAlchemy: a SQLite file by default (standalone), PostgreSQL in
deployments. Tables (all prefixed ``connectif_sync_``):

``state``      object, key, key_hash, row_hash (64-bit hash of the CSV values sent), source_hash (of the
               source values and the mapping: a full scan skips shaping rows whose source is unchanged),
               source_updated_at, confirmed_at. Written **only** by :meth:`StateStore.confirm_file`, i.e.
               after Connectif confirmed the row. A row missing here, or with another hash, is sent again.
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
``snapshots``  (SQLite only) a copy of one object's ``state`` hashes as one sorted binary array, rewritten in the
               same transaction as every ``state`` write: a full-scan diff reads one value instead of
               3 x 1,000,000 integers through ``sqlite3`` (about 3 s, the dominant cost of a second run).
               ``state`` stays the truth: a missing snapshot is rebuilt from it.
``uploads``    every upload of a chunk file to Connectif (content hash, start, import id once known), written
               *before* the upload starts: a retry, or a later run that wrote a file of the same content,
               re-attaches to the import an earlier try made instead of importing the same rows again
               (:meth:`StateStore.earlier_upload`).

Bulk paths: on PostgreSQL, ADBC (COPY) reads a million hashes or stages a million confirmed rows in about a
second. On SQLite the store deliberately uses only Python's ``sqlite3`` (through SQLAlchemy): two SQLite
libraries in one process (ADBC bundles its own) must not share a database file that is written, because
closing one library's connection drops the other's POSIX locks (SQLite's documented corruption case).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connectif_sync.chunk import ChunkFile, read_manifest
from connectif_sync.contract import RunSummary
from connectif_sync.extract import adbc_connect, adbc_uri
from connectif_sync.hashing import PositionIndex

DEFAULT_STATE_URL = "sqlite:///connectif_sync_state.db"
KEEP_REJECTED_RUNS = 5
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
    sa.Index("ix_connectif_sync_rejected_run", "object", "run_id"),
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

ERASURE_OUTCOMES = ("deleted", "absent")
"""``deleted``: Connectif had the contact and deleted it; ``absent``: it answered 404 (nothing to erase)."""

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
KEEP_UPLOADS = timedelta(days=30)
"""Upload records older than this are forgotten (an import that old is never re-attached to)."""

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

PURCHASE_DONE = ("confirmed", "duplicate")
"""Purchase statuses that mean Connectif has it: never send again."""


def _no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters: a rejected value shows them as ``\\x00`` instead."""
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes: two chunk files with the same digest hold the same rows in the same lines."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def csv_rows(csv_path: str | Path) -> int:
    """Data lines of a chunk file, from its manifest."""
    return int(read_manifest(csv_path)[1].num_rows)


def _unproven(result: AbcMapping[str, Any], failed: AbcMapping[int, str], rows: int) -> str | None:
    """Why an import's answer does not prove which rows of its file Connectif took (None when it does).

    Every row must be accounted for: ``total`` is the file's row count, and the error report names as many
    distinct lines as ``errors`` counts (a missing or short report would otherwise confirm rejected rows).
    """
    import_id = result.get("import_id")
    if result.get("report_complete") is False:
        return f"import {import_id}: its error report is missing or incomplete"
    total, errors = result.get("total"), result.get("errors")
    if total is not None and int(total) != rows:
        return f"import {import_id} counted {total} rows, the file has {rows}: it is not this file's import"
    success = result.get("success")
    per_field = success is not None and len(failed) > 0 and int(success) + len(failed) == rows
    if errors is not None and len(failed) < int(errors) and not per_field:
        return (
            f"import {import_id} failed {errors} rows but its error report names {len(failed)}: "
            "the rows it does not name cannot be told apart"
        )
    return None


@dataclass(frozen=True)
class RunHistoryEntry:
    """One row of the run history: an Airflow run's state and the counts the pages chart."""

    dag_id: str
    run_id: str
    object: str
    state: str
    dry_run: bool
    library_run_id: str | None
    recorded_at: datetime
    to_send: int
    sent: int
    changed: int
    unchanged: int
    rejected: int
    api_requests: int | None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _run_clock() -> datetime:
    """Run start/finish times keep their microseconds: "the latest run" must not be a tie between two runs
    of the same second (a retried task, a test, a backfill)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class StateIndex:
    """The confirmed hashes of one object, sorted by key hash, for a full-scan diff (24 bytes per key)."""

    key_hashes: np.ndarray
    row_hashes: np.ndarray
    seen: np.ndarray
    source_hashes: np.ndarray | None = None
    _sources: PositionIndex | None = None  # where each source hash is (a hash table)

    @classmethod
    def empty(cls) -> StateIndex:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool))

    def __len__(self) -> int:
        return len(self.key_hashes)

    def positions(self, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position in the index)`` per key hash (position 0 where not found)."""
        if len(self.key_hashes) == 0:
            return np.zeros(len(key_hashes), bool), np.zeros(len(key_hashes), np.int64)
        order = np.argsort(key_hashes)  # sorted probes walk the index in order: much faster
        idx = np.empty(len(key_hashes), dtype=np.int64)
        idx[order] = np.searchsorted(self.key_hashes, key_hashes[order])
        idx[idx == len(self.key_hashes)] = 0
        found = self.key_hashes[idx] == key_hashes
        idx[~found] = 0
        return found, idx

    def lookup(self, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, confirmed row hash)`` per key; marks the found ones as seen (for deletions)."""
        if len(self.key_hashes) == 0:
            return np.zeros(len(key_hashes), bool), np.zeros(len(key_hashes), np.int64)
        found, idx = self.positions(key_hashes)
        self.seen[idx[found]] = True
        return found, np.where(found, self.row_hashes[idx], 0)

    def prepare_sources(self) -> None:
        """Index the source hashes for :meth:`find_sources` (done on first use; call it before sharing the
        index between threads)."""
        if self.source_hashes is not None and self._sources is None:
            self._sources = PositionIndex(self.source_hashes)

    def find_sources(self, source_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position)`` of rows whose source hash was confirmed (read-only once
        :meth:`prepare_sources` ran: safe from threads)."""
        n = len(source_hashes)
        if self.source_hashes is None or len(self.key_hashes) == 0:
            return np.zeros(n, bool), np.zeros(n, np.int64)
        self.prepare_sources()
        assert self._sources is not None
        return self._sources.find(source_hashes)

    def unseen(self) -> np.ndarray:
        return self.key_hashes[~self.seen]


class StateStore:
    """Per-object sync state in a SQL database (see the module docstring).

    ``readonly=True`` never creates or changes anything (used by dry runs): a missing store reads as empty.
    """

    def __init__(self, url: str | None = None, *, readonly: bool = False) -> None:
        self.url = url or DEFAULT_STATE_URL
        self.readonly = readonly
        u = sa.make_url(self.url)
        self._missing = (
            readonly
            and u.get_backend_name() == "sqlite"
            and u.database not in (None, "", ":memory:")
            and not Path(str(u.database)).exists()
        )
        self.engine = sa.create_engine(self.url)
        self._adbc = u.get_backend_name() == "postgresql" and adbc_uri(self.url) is not None
        if u.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if not readonly:
            _create_tables(self.engine)
        elif not self._missing:
            self._missing = not sa.inspect(self.engine).has_table(state_table.name)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> None:
        if self.readonly:
            raise RuntimeError("this state store was opened read-only (dry run)")

    # ------------------------------------------------------------------------------------------ reads

    def _arrow(self, sql: str, params: dict[str, Any]) -> pa.Table:
        """Run a SELECT into Arrow: ADBC where available, SQLAlchemy otherwise."""
        if self._adbc:
            text = sql
            for k, v in params.items():  # only internal, quoted literals (object names, run ids)
                text = text.replace(f":{k}", "'" + str(v).replace("'", "''") + "'")
            with adbc_connect(self.url) as conn, conn.cursor() as cur:
                cur.execute(text)
                return cur.fetch_arrow_table()
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(sql), params)
            names = list(result.keys())
            cols: list[list[Any]] = [[] for _ in names]
            for part in result.partitions(100_000):
                for i, c in enumerate(zip(*part, strict=True)):
                    cols[i].extend(c)
        return pa.table({n: pa.array(c) for n, c in zip(names, cols, strict=True)})

    def load_index(self, obj: str) -> StateIndex:
        """All confirmed hashes of ``obj`` (16 bytes per key) for a full-scan comparison."""
        if self._missing:
            return StateIndex.empty()
        sql = (
            "SELECT key_hash, row_hash, COALESCE(source_hash, 0) AS source_hash "
            "FROM connectif_sync_state WHERE object = :obj"
        )
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                snap = _read_snapshot(conn, obj)
            if snap is not None:
                return StateIndex(snap[:, 0].copy(), snap[:, 1].copy(), np.zeros(len(snap), bool), snap[:, 2].copy())
            kh, rh, sh = self._sqlite_columns(sql.replace(":obj", "?"), obj, 3)
        else:
            t = self._arrow(sql, {"obj": obj})
            kh, rh, sh = (
                np.asarray(t.column(c).to_numpy(), dtype=np.int64) for c in ("key_hash", "row_hash", "source_hash")
            )
        if len(kh) == 0:
            return StateIndex.empty()
        order = np.argsort(kh)
        return StateIndex(kh[order], rh[order], np.zeros(len(kh), bool), sh[order])

    def _sqlite_columns(self, sql: str, obj: str, ncols: int) -> tuple[np.ndarray, ...]:
        """Integer columns straight from the sqlite3 cursor into numpy (no per-row SQLAlchemy work)."""
        with self.engine.connect() as conn:
            return _sqlite_int_columns(conn, sql, obj, ncols)

    def lookup(self, obj: str, key_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, row_hash)`` for a few keys (incremental runs), without loading the whole object."""
        found = np.zeros(len(key_hashes), bool)
        hashes = np.zeros(len(key_hashes), np.int64)
        if self._missing or len(key_hashes) == 0:
            return found, hashes
        confirmed: dict[int, int] = {}
        with self.engine.connect() as conn:
            uniq = np.unique(key_hashes).tolist()
            if self.engine.dialect.name == "sqlite":  # the driver directly: no per-row SQLAlchemy work
                raw = conn.connection.driver_connection
                assert raw is not None
                batch = min(5000, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 1)  # fewer, larger probes
                for i in range(0, len(uniq), batch):
                    part = uniq[i : i + batch]
                    marks = ", ".join("?" * len(part))
                    sql = f"SELECT key_hash, row_hash FROM connectif_sync_state WHERE object = ? AND key_hash IN ({marks})"  # noqa: E501
                    confirmed.update(raw.execute(sql, [obj, *part]).fetchall())
                uniq = []
            for i in range(0, len(uniq), _LOOKUP_BATCH):
                part = uniq[i : i + _LOOKUP_BATCH]
                q = sa.select(state_table.c.key_hash, state_table.c.row_hash).where(
                    state_table.c.object == obj, state_table.c.key_hash.in_(part)
                )
                confirmed.update({int(k): int(r) for k, r in conn.execute(q)})
        for i, k in enumerate(key_hashes.tolist()):
            r = confirmed.get(k)
            if r is not None:
                found[i] = True
                hashes[i] = r
        return found, hashes

    def keys_for(self, obj: str, key_hashes: Iterable[int], limit: int | None = None) -> list[str]:
        """The keys behind some key hashes (to report deletions by name)."""
        wanted = list(key_hashes)[: limit if limit is not None else None]
        out: list[str] = []
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), _LOOKUP_BATCH):
                q = sa.select(state_table.c.key).where(
                    state_table.c.object == obj, state_table.c.key_hash.in_(wanted[i : i + _LOOKUP_BATCH])
                )
                out.extend(r[0] for r in conn.execute(q))
        return sorted(out)

    def confirmed(self, obj: str) -> dict[str, int]:
        """Every confirmed key of ``obj`` with its row hash (for tests and small objects)."""
        if self._missing:
            return {}
        with self.engine.connect() as conn:
            q = sa.select(state_table.c.key, state_table.c.row_hash).where(state_table.c.object == obj)
            return {k: int(h) for k, h in conn.execute(q)}

    def next_since(self, obj: str, lookback: timedelta) -> datetime | None:
        """Where an incremental run of ``obj`` starts, or None when it must scan everything.

        The high-water mark of the last finished run, held back by the oldest row still pending (in a file
        not yet confirmed, or rejected by Connectif), minus ``lookback`` for rows committed late in the source.
        """
        if self._missing:
            return None
        with self.engine.connect() as conn:
            high = conn.execute(
                sa.select(runs_table.c.high_water)
                .where(runs_table.c.object == obj, runs_table.c.finished_at.is_not(None), runs_table.c.mode != "plan")
                .order_by(runs_table.c.finished_at.desc(), runs_table.c.started_at.desc())
                .limit(1)
            ).scalar()
            if high is None:
                return None
            files_min = conn.execute(
                sa.select(sa.func.min(files_table.c.min_updated_at)).where(
                    files_table.c.object == obj, files_table.c.status == "pending"
                )
            ).scalar()
            pending_min = conn.execute(
                sa.select(sa.func.min(pending_table.c.source_updated_at)).where(pending_table.c.object == obj)
            ).scalar()
        marks = [m for m in (high, files_min, pending_min) if m]
        return parse_ts(min(marks)) - lookback

    # ----------------------------------------------------------------------------------------- runs

    def begin_run(self, obj: str, mode: str, since: datetime | None, run_id: str | None = None) -> str:
        """Start a run: older unconfirmed files are superseded (this run re-extracts their rows) and the
        rows Connectif rejected last time are cleared (this run sends them again)."""
        self._write()
        run_id = run_id or f"{obj}-{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.engine.begin() as conn:
            conn.execute(
                files_table.update()
                .where(files_table.c.object == obj, files_table.c.status == "pending")
                .values(status="superseded")
            )
            conn.execute(pending_table.delete().where(pending_table.c.object == obj))
            conn.execute(
                runs_table.insert().values(
                    run_id=run_id,
                    object=obj,
                    mode=mode,
                    started_at=_run_clock(),
                    since=since.strftime("%Y-%m-%d %H:%M:%S") if since else None,
                )
            )
        return run_id

    def finish_run(
        self, run_id: str, *, files: list[ChunkFile], high_water: str | None, report: dict[str, Any]
    ) -> None:
        self._write()
        with self.engine.begin() as conn:
            obj = conn.execute(sa.select(runs_table.c.object).where(runs_table.c.run_id == run_id)).scalar_one()
            if high_water is None:  # nothing extracted: keep the previous mark
                high_water = conn.execute(
                    sa.select(runs_table.c.high_water)
                    .where(runs_table.c.object == obj, runs_table.c.high_water.is_not(None))
                    .order_by(runs_table.c.started_at.desc())
                    .limit(1)
                ).scalar()
            now = _now()
            if files:
                paths = [str(Path(f.path).resolve()) for f in files]
                conn.execute(files_table.delete().where(files_table.c.path.in_(paths)))  # same out_dir reused
                conn.execute(
                    files_table.insert(),
                    [
                        {
                            "path": str(Path(f.path).resolve()),
                            "object": f.object,
                            "run_id": run_id,
                            "partition": f.partition,
                            "rows": f.rows,
                            "bytes": f.bytes,
                            "min_updated_at": f.min_updated_at,
                            "status": "pending",
                            "created_at": now,
                        }
                        for f in files
                    ],
                )
            conn.execute(
                runs_table.update()
                .where(runs_table.c.run_id == run_id)
                .values(finished_at=_run_clock(), high_water=high_water, report=json.dumps(report))
            )
            keep = [
                r[0]
                for r in conn.execute(
                    sa.select(runs_table.c.run_id)
                    .where(runs_table.c.object == obj)
                    .order_by(runs_table.c.started_at.desc())
                    .limit(KEEP_REJECTED_RUNS)
                )
            ]
            if keep:
                conn.execute(
                    rejected_table.delete().where(rejected_table.c.object == obj, rejected_table.c.run_id.not_in(keep))
                )

    def runs(self, obj: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs (newest first) with their reports."""
        if self._missing:
            return []
        q = sa.select(runs_table).order_by(runs_table.c.started_at.desc()).limit(limit)
        if obj:
            q = q.where(runs_table.c.object == obj)
        with self.engine.connect() as conn:
            out = [dict(r._mapping) for r in conn.execute(q)]
        for r in out:
            r["report"] = json.loads(r["report"]) if r["report"] else None
        return out

    # ---------------------------------------------------------------------------------- run history

    def record_run_summary(self, summary: RunSummary) -> None:
        """Keep one Airflow run's summary (the run's ``report`` task calls this; a re-run replaces it)."""
        self._write()
        row = {
            "dag_id": summary.dag_id,
            "run_id": summary.run_id,
            "object": summary.object.value,
            "state": summary.state.value,
            "dry_run": summary.dry_run,
            "library_run_id": summary.library_run_id,
            "recorded_at": _run_clock(),
            "to_send": summary.to_send,
            "sent": summary.sent,
            "changed": summary.changed,
            "unchanged": summary.unchanged,
            "rejected": summary.rejected,
            "api_requests": summary.requests_spent,
            "summary": json.dumps(summary.as_dict(), default=str),
        }
        t = run_history_table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.dag_id == summary.dag_id, t.c.run_id == summary.run_id))
            conn.execute(t.insert().values(**row))

    def run_summary(self, dag_id: str, run_id: str) -> RunSummary | None:
        """The summary one Airflow run's ``report`` task recorded, or None (not reported yet, or another DAG)."""
        if self._missing:
            return None
        t = run_history_table
        try:
            with self.engine.connect() as conn:
                text = conn.execute(sa.select(t.c.summary).where(t.c.dag_id == dag_id, t.c.run_id == run_id)).scalar()
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before the history, read-only
            return None
        return RunSummary.from_dict(json.loads(text)) if text else None

    def run_history(self, obj: str, limit: int = 30) -> list[RunHistoryEntry]:
        """The latest ``limit`` runs of ``obj`` (newest first), without their full summaries."""
        if self._missing:
            return []
        t = run_history_table
        q = (
            sa.select(
                t.c.dag_id, t.c.run_id, t.c.object, t.c.state, t.c.dry_run, t.c.library_run_id, t.c.recorded_at,
                t.c.to_send, t.c.sent, t.c.changed, t.c.unchanged, t.c.rejected, t.c.api_requests,
            )
            .where(t.c.object == obj)
            .order_by(t.c.recorded_at.desc())
            .limit(limit)
        )  # fmt: skip
        try:
            with self.engine.connect() as conn:
                return [RunHistoryEntry(**r._mapping) for r in conn.execute(q)]
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            return []

    # ------------------------------------------------------------------------------------- rejected

    def record_rejected(self, obj: str, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Store rows validation set aside in this run (any number of calls per run); :meth:`finish_run`
        keeps only the last few runs per object."""
        self._write()
        if not rows:
            return
        now = _now()
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                # The driver's executemany directly: SQLAlchemy's per-row parameter processing costs ten
                # times the insert itself (a first run of a million contacts stores about 20,000 of them).
                t = now.strftime("%Y-%m-%d %H:%M:%S.%f")
                conn.exec_driver_sql(
                    "INSERT INTO connectif_sync_rejected "
                    "(run_id, object, key, source_ref, field, reason, value, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (run_id, obj, r.get("key"), r.get("source_ref"), r.get("field"), r["reason"], r.get("value"), t)
                        for r in rows
                    ],
                )
                return
            conn.execute(
                rejected_table.insert(),
                [
                    {
                        "run_id": run_id,
                        "object": obj,
                        "key": _no_nul(r.get("key")),
                        "source_ref": _no_nul(r.get("source_ref")),
                        "field": r.get("field"),
                        "reason": r["reason"],
                        "value": _no_nul(r.get("value")),
                        "recorded_at": now,
                    }
                    for r in rows
                ],
            )

    def rejected(self, obj: str | None = None, run_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Rows set aside by validation: of ``run_id``, else of the latest run of ``obj`` (else of any); the
        first ``limit`` (see :meth:`iter_rejected` for all of them, :meth:`count_rejected` for how many)."""
        return list(itertools.islice(self.iter_rejected(obj, run_id), max(limit, 0)))

    def _rejected_run(self, conn: sa.Connection, obj: str | None, run_id: str | None) -> str | None:
        """``run_id``, or the latest non-plan run of ``obj``; ``""`` when ``obj`` has no run (nothing to list)."""
        if run_id is not None or obj is None:
            return run_id
        latest = conn.execute(
            sa.select(runs_table.c.run_id)
            .where(runs_table.c.object == obj, runs_table.c.mode != "plan")
            .order_by(runs_table.c.started_at.desc())
            .limit(1)
        ).scalar()
        return "" if latest is None else str(latest)

    def _rejected_filter(self, obj: str | None, run_id: str | None) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = []
        if obj:
            where.append(rejected_table.c.object == obj)
        if run_id:
            where.append(rejected_table.c.run_id == run_id)
        return where

    def iter_rejected(
        self, obj: str | None = None, run_id: str | None = None, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every row set aside in ``run_id`` (else the latest run of ``obj``), in order, read a page at a time."""
        if self._missing:
            return
        with self.engine.connect() as conn:
            run_id = self._rejected_run(conn, obj, run_id)
        if run_id == "":
            return
        t = rejected_table
        columns = (t.c.run_id, t.c.object, t.c.key, t.c.source_ref, t.c.field, t.c.reason, t.c.value)
        last = -1
        while True:
            q = (
                sa.select(t.c.id, *columns)
                .where(t.c.id > last, *self._rejected_filter(obj, run_id))
                .order_by(t.c.id)
                .limit(page_size)
            )
            with self.engine.connect() as conn:
                page = [dict(r._mapping) for r in conn.execute(q)]
            for row in page:
                last = row.pop("id")
                yield row
            if len(page) < page_size:
                return

    def count_rejected(self, obj: str | None = None, run_id: str | None = None) -> int:
        """How many rows :meth:`iter_rejected` yields for the same arguments."""
        if self._missing:
            return 0
        with self.engine.connect() as conn:
            run_id = self._rejected_run(conn, obj, run_id)
            if run_id == "":
                return 0
            q = sa.select(sa.func.count()).select_from(rejected_table).where(*self._rejected_filter(obj, run_id))
            return int(conn.execute(q).scalar() or 0)

    def rejected_page(
        self,
        obj: str,
        run_id: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        key: str | None = None,
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """One page of a run's rejected rows, oldest first, after row ``after_id`` (keyset pagination).

        Every filter is an equality (``key``: the exact key or, ending in ``*``, a prefix), so each page is
        one range read of an index of :data:`REJECTED_BROWSE_INDEXES`, however many rows the run has.
        """
        if self._missing:
            return []
        t = rejected_table
        q = sa.select(t.c.id, t.c.run_id, t.c.object, t.c.key, t.c.source_ref, t.c.field, t.c.reason, t.c.value)
        q = q.where(t.c.object == obj, t.c.run_id == run_id)
        if field:
            q = q.where(t.c.field == field)
        if reason:
            q = q.where(t.c.reason == reason)
        if key:
            if key.endswith("*"):
                prefix = key[:-1]
                q = q.where(t.c.key >= prefix, t.c.key < prefix + "\U0010ffff")
            else:
                q = q.where(t.c.key == key)
        if after_id is not None:
            q = q.where(t.c.id > after_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.id).limit(limit))]

    def rejected_run_ids(self, obj: str) -> list[str]:
        """The library runs of ``obj`` whose rejected rows are kept (newest first)."""
        if self._missing:
            return []
        with self.engine.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    sa.select(runs_table.c.run_id)
                    .where(runs_table.c.object == obj, runs_table.c.mode != "plan")
                    .order_by(runs_table.c.started_at.desc())
                    .limit(KEEP_REJECTED_RUNS)
                )
            ]

    def pending_page(self, obj: str, *, after_key: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """One page of the rows Connectif rejected and that go again next run, by key (keyset pagination)."""
        if self._missing:
            return []
        t = pending_table
        q = sa.select(t).where(t.c.object == obj)
        if after_key is not None:
            q = q.where(t.c.key > after_key)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.key).limit(limit))]

    def counts(self, obj: str) -> dict[str, int]:
        """Rows pending retry and suppressed keys of ``obj`` (two index-only counts)."""
        if self._missing:
            return {"pending": 0, "suppressed": 0}
        with self.engine.connect() as conn:
            pending = conn.execute(
                sa.select(sa.func.count()).select_from(pending_table).where(pending_table.c.object == obj)
            ).scalar_one()
            try:
                suppressed = conn.execute(
                    sa.select(sa.func.count()).select_from(suppressed_table).where(suppressed_table.c.object == obj)
                ).scalar_one()
            except sa.exc.OperationalError:
                suppressed = 0
        return {"pending": int(pending), "suppressed": int(suppressed)}

    def suppressed_page(self, obj: str, *, after_key: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """One page of the suppression list of ``obj``, by key (keyset pagination)."""
        if self._missing:
            return []
        t = suppressed_table
        q = sa.select(t.c.object, t.c.key, t.c.reason, t.c.suppressed_at).where(t.c.object == obj)
        if after_key is not None:
            q = q.where(t.c.key > after_key)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q.order_by(t.c.key).limit(limit))]
        except sa.exc.OperationalError:
            return []

    def pending(self, obj: str | None = None) -> list[dict[str, Any]]:
        """Rows Connectif rejected in an import (they go again next run)."""
        if self._missing:
            return []
        q = sa.select(pending_table).order_by(pending_table.c.object, pending_table.c.key)
        if obj:
            q = q.where(pending_table.c.object == obj)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def files(self, obj: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        if self._missing:
            return []
        q = sa.select(files_table).order_by(files_table.c.created_at, files_table.c.path)
        if obj:
            q = q.where(files_table.c.object == obj)
        if status:
            q = q.where(files_table.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -------------------------------------------------------------------------------- confirmation

    def confirm_file(
        self,
        csv_path: str | Path,
        failed_lines: Iterable[int] | AbcMapping[int, str] = (),
        *,
        import_id: str | None = None,
    ) -> dict[str, Any]:
        """Commit every row of a chunk file that Connectif imported, except ``failed_lines``.

        ``failed_lines`` are 1-based data lines (as in the import's error report), optionally with their
        error text. Those rows stay uncommitted (so the next run sends them again) and are recorded in
        ``pending``. Returns ``{"object", "path", "confirmed", "failed"}``. Confirming twice is harmless.
        """
        self._write()
        header, manifest = read_manifest(csv_path)
        manifest = manifest.combine_chunks()
        obj = header.get("object")
        if not obj:
            raise ValueError(f"{csv_path}: its manifest names no object; was it written by connectif_sync?")
        reasons: dict[int, str] = (
            {int(k): str(v) for k, v in failed_lines.items()}
            if isinstance(failed_lines, AbcMapping)
            else {int(k): "rejected by Connectif" for k in failed_lines}
        )
        lines = manifest.column("line")
        unknown = sorted(k for k in reasons if not 1 <= k <= len(lines))  # lines are 1..n in order
        if unknown:
            raise ValueError(f"{csv_path}: lines {unknown[:10]} are not data lines of this file (1..{len(lines)})")
        failed_mask = pc.is_in(lines, pa.array(sorted(reasons), pa.int64())) if reasons else None
        ok = manifest.filter(pc.invert(failed_mask)) if failed_mask is not None else manifest
        bad = manifest.filter(failed_mask) if failed_mask is not None else manifest.slice(0, 0)
        now = _now()
        self._upsert_state(obj, ok, now)
        resolved = str(Path(csv_path).resolve())
        with self.engine.begin() as conn:
            any_pending = conn.execute(
                sa.select(pending_table.c.key).where(pending_table.c.object == obj).limit(1)
            ).first()
            keys_ok = ok.column("key").to_pylist() if any_pending else []
            for i in range(0, len(keys_ok), _LOOKUP_BATCH):
                conn.execute(
                    pending_table.delete().where(
                        pending_table.c.object == obj, pending_table.c.key.in_(keys_ok[i : i + _LOOKUP_BATCH])
                    )
                )
            for row in bad.to_pylist():
                conn.execute(
                    pending_table.delete().where(pending_table.c.object == obj, pending_table.c.key == row["key"])
                )
                conn.execute(
                    pending_table.insert().values(
                        object=obj,
                        key=row["key"],
                        path=resolved,
                        line=row["line"],
                        reason=reasons[row["line"]],
                        source_updated_at=row["updated_at"],
                        recorded_at=now,
                    )
                )
            conn.execute(
                files_table.update()
                .where(files_table.c.path == resolved)
                .values(status="confirmed", confirmed_at=now, confirmed_rows=ok.num_rows, failed_rows=bad.num_rows)
            )
            self._uploads_confirmed(conn, resolved, import_id)
        return {"object": obj, "path": str(csv_path), "confirmed": ok.num_rows, "failed": bad.num_rows}

    def confirm_import(self, result: AbcMapping[str, Any]) -> dict[str, Any]:
        """:meth:`confirm_file` from the summary the Connectif import operator returns.

        Uses ``file_path`` and ``rejected_rows`` (``[{"line", "field", "error"}]``). An import whose
        ``status`` is not ``finished`` confirms nothing: all its rows stay pending.
        """
        status = result.get("status")
        if status != "finished":
            raise ValueError(f"import {result.get('import_id')} ended {status!r}: nothing can be confirmed")
        failed: dict[int, str] = {}
        for r in result.get("rejected_rows") or []:
            try:
                line = int(r["line"])
            except (TypeError, ValueError):
                continue  # not a data line: cannot be matched to a row (the count check below decides)
            text = f"{r.get('field') or ''}: {r.get('error') or 'rejected'}".strip(": ")
            failed[line] = f"{failed[line]}; {text}" if line in failed else text
        why = _unproven(result, failed, csv_rows(result["file_path"]))
        if why is not None:
            return self.keep_pending(result["file_path"], why)
        return self.confirm_file(result["file_path"], failed, import_id=str(result.get("import_id") or "") or None)

    def keep_pending(self, csv_path: str | Path, reason: str) -> dict[str, Any]:
        """Confirm nothing of a file whose import's answer does not prove which rows Connectif took: the file
        stays ``pending`` (its rows go again next run, and it holds the watermark back), with ``reason``."""
        self._write()
        header, manifest = read_manifest(csv_path)
        resolved = str(Path(csv_path).resolve())
        with self.engine.begin() as conn:
            conn.execute(
                files_table.update()
                .where(files_table.c.path == resolved, files_table.c.status == "pending")
                .values(unconfirmed_reason=reason)
            )
        return {
            "object": header.get("object"),
            "path": str(csv_path),
            "confirmed": 0,
            "failed": 0,
            "unconfirmed": manifest.num_rows,
            "reason": reason,
        }

    def _upsert_state(self, obj: str, rows: pa.Table, now: datetime) -> None:
        if rows.num_rows == 0:
            return
        data = pa.table(
            {
                "key": rows.column("key"),
                "key_hash": rows.column("key_hash"),
                "row_hash": rows.column("row_hash"),
                "source_hash": rows.column("source_hash")
                if "source_hash" in rows.column_names
                else pa.nulls(rows.num_rows, pa.int64()),
                "source_updated_at": rows.column("updated_at"),
                "empty_mask": rows.column("empty_mask")
                if "empty_mask" in rows.column_names
                else pa.nulls(rows.num_rows, pa.int64()),
            }
        )
        dialect = self.engine.dialect.name
        if dialect != "sqlite":  # SQLite writes the object and the time once into its statement (below)
            data = data.append_column("object", pa.array([obj] * rows.num_rows, pa.string())).append_column(
                "confirmed_at", pa.array([now.strftime("%Y-%m-%d %H:%M:%S")] * rows.num_rows, pa.string())
            )
        if self._adbc:
            stage = f"connectif_sync_stage_{uuid.uuid4().hex[:12]}"
            confirmed = "CAST(confirmed_at AS TIMESTAMP)"
            with adbc_connect(self.url) as conn, conn.cursor() as cur:
                cur.adbc_ingest(stage, data, mode="create", temporary=True)
                cur.execute(
                    "INSERT INTO connectif_sync_state "
                    "(object, key, key_hash, row_hash, source_hash, source_updated_at, confirmed_at, empty_mask) "
                    "SELECT object, key, key_hash, row_hash, source_hash, source_updated_at, "
                    f"{confirmed}, empty_mask FROM {stage} WHERE true "
                    "ORDER BY object, key ON CONFLICT (object, key) DO UPDATE SET key_hash = excluded.key_hash, "
                    "row_hash = excluded.row_hash, source_hash = excluded.source_hash, "
                    "source_updated_at = excluded.source_updated_at, "
                    "confirmed_at = excluded.confirmed_at, empty_mask = excluded.empty_mask"
                )
                cur.execute(f"DROP TABLE {stage}")
                conn.commit()
            return
        data = data.sort_by([("key", "ascending")])  # in key order the B-tree fills sequentially
        if dialect == "sqlite":
            # The object and the time are the same for every row: written once into the statement (SQLite
            # quoting), so that the driver binds six values per row instead of eight (the binding is most of
            # this loop's cost, bench/README.md).
            cols = ("key", "key_hash", "row_hash", "source_hash", "source_updated_at", "empty_mask")
            consts = ", ".join("'" + v.replace("'", "''") + "'" for v in (obj, now.strftime("%Y-%m-%d %H:%M:%S")))
            with self.engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA cache_size=-131072")  # 128 MB: a big upsert stays in memory
                base = _read_snapshot(conn, obj)
                if (
                    base is None
                    and conn.execute(sa.select(state_table.c.key).where(state_table.c.object == obj).limit(1)).first()
                    is None
                ):
                    base = np.empty((0, 3), np.int64)  # no state yet: the snapshot starts empty
                for off in range(0, data.num_rows, 50_000):  # Python rows for 50k at a time, not the whole file
                    part = data.slice(off, 50_000)
                    rows = zip(*(part.column(c).to_pylist() for c in cols), strict=True)
                    conn.exec_driver_sql(
                        f"INSERT INTO connectif_sync_state (object, confirmed_at, {', '.join(cols)}) "
                        f"VALUES ({consts}, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (object, key) DO UPDATE SET key_hash = excluded.key_hash, "
                        "row_hash = excluded.row_hash, source_hash = excluded.source_hash, "
                        "source_updated_at = excluded.source_updated_at, "
                        "confirmed_at = excluded.confirmed_at, empty_mask = excluded.empty_mask",
                        list(rows),
                    )
                _write_snapshot(conn, obj, base, data)
            return
        records = data.to_pylist()
        for r in records:
            r["confirmed_at"] = now
        with self.engine.begin() as conn:
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert

                stmt = insert(state_table)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[state_table.c.object, state_table.c.key],
                    set_={
                        c: stmt.excluded[c]
                        for c in (
                            "key_hash", "row_hash", "source_hash", "source_updated_at", "confirmed_at", "empty_mask"
                        )
                    },
                )
                conn.execute(stmt, records)
            else:
                for i in range(0, len(records), _LOOKUP_BATCH):
                    part = records[i : i + _LOOKUP_BATCH]
                    conn.execute(
                        state_table.delete().where(
                            state_table.c.object == obj, state_table.c.key.in_([r["key"] for r in part])
                        )
                    )
                    conn.execute(state_table.insert(), part)

    # ----------------------------------------------------------------------------------- suppressed

    def suppress(self, obj: str, keys: Iterable[str], reason: str) -> int:
        """Never send these keys of ``obj`` again (e.g. contacts erased on request); returns how many are new.

        Keys are compared as the sync computes them (contacts: the trimmed, lower-cased email)."""
        self._write()
        from connectif_sync.hashing import as_signed, hash_strings

        wanted = sorted({k for k in keys if k})
        if not wanted:
            return 0
        hashes = as_signed(hash_strings(pa.array(wanted, pa.string()))).tolist()
        now, added = _now(), 0
        with self.engine.begin() as conn:
            for i in range(0, len(wanted), _LOOKUP_BATCH):
                part = wanted[i : i + _LOOKUP_BATCH]
                known = {
                    r[0]
                    for r in conn.execute(
                        sa.select(suppressed_table.c.key).where(
                            suppressed_table.c.object == obj, suppressed_table.c.key.in_(part)
                        )
                    )
                }
                rows = [
                    {"object": obj, "key": k, "key_hash": h, "reason": reason, "suppressed_at": now}
                    for k, h in zip(part, hashes[i : i + _LOOKUP_BATCH], strict=True)
                    if k not in known
                ]
                if rows:
                    conn.execute(suppressed_table.insert(), rows)
                    added += len(rows)
        return added

    def unsuppress(self, obj: str, keys: Iterable[str]) -> int:
        """Allow these keys to be sent again (an erasure withdrawn); returns how many were suppressed."""
        self._write()
        wanted = sorted(set(keys))
        removed = 0
        with self.engine.begin() as conn:
            for i in range(0, len(wanted), _LOOKUP_BATCH):
                result = conn.execute(
                    suppressed_table.delete().where(
                        suppressed_table.c.object == obj, suppressed_table.c.key.in_(wanted[i : i + _LOOKUP_BATCH])
                    )
                )
                removed += result.rowcount or 0
        return removed

    def suppressed(self, obj: str | None = None) -> list[dict[str, Any]]:
        """The suppressed keys (of ``obj``, or all) with their reason, oldest first."""
        if self._missing:
            return []
        q = sa.select(
            suppressed_table.c.object, suppressed_table.c.key, suppressed_table.c.reason,
            suppressed_table.c.suppressed_at,
        ).order_by(suppressed_table.c.suppressed_at, suppressed_table.c.key)  # fmt: skip
        if obj:
            q = q.where(suppressed_table.c.object == obj)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q)]
        except sa.exc.OperationalError:  # a store created before suppression, opened read-only
            return []

    def suppressed_hashes(self, obj: str) -> dict[int, str]:
        """Key hash -> reason of every suppressed key of ``obj`` (the sync checks each row against them)."""
        if self._missing:
            return {}
        q = sa.select(suppressed_table.c.key_hash, suppressed_table.c.reason).where(suppressed_table.c.object == obj)
        try:
            with self.engine.connect() as conn:
                return {int(h): r for h, r in conn.execute(q)}
        except sa.exc.OperationalError:  # a store created before suppression, opened read-only
            return {}

    # -------------------------------------------------------------------------------------- uploads

    def record_upload(
        self, csv_path: str | Path, *, started_at: float, rows: int | None = None, import_id: str | None = None
    ) -> None:
        """Record an upload of a chunk file: before it starts (``import_id`` None), then with the import's id.

        The record outlives the task and the run: :meth:`earlier_upload` finds it again for a retry, or for a
        later run whose file has the same content.
        """
        self._write()
        path = str(Path(csv_path).resolve())
        digest = file_digest(path)
        now = _now()
        with self.engine.begin() as conn:
            owner = conn.execute(
                sa.select(files_table.c.object, files_table.c.run_id).where(files_table.c.path == path)
            ).first()
            obj = owner.object if owner is not None else None
            if obj is None:
                try:
                    obj = read_manifest(path)[0].get("object")
                except (OSError, ValueError):
                    obj = None
            conn.execute(uploads_table.delete().where(uploads_table.c.path == path))
            conn.execute(
                uploads_table.insert().values(
                    path=path,
                    object=obj,
                    run_id=owner.run_id if owner is not None else None,
                    content_hash=digest,
                    rows=rows,
                    import_id=import_id,
                    started_at=float(started_at),
                    status="imported" if import_id else "uploading",
                    updated_at=now,
                )
            )
            conn.execute(uploads_table.delete().where(uploads_table.c.updated_at < now - KEEP_UPLOADS))

    def earlier_upload(self, csv_path: str | Path) -> dict[str, Any] | None:
        """The latest unconfirmed upload of a file with exactly this file's content (this very file included:
        a task whose ``task_state_store`` was lost), if re-attaching to it is safe: no other run uploaded rows
        of this object after it (they could have overwritten its rows in Connectif).
        ``{"path", "import_id" (None when its answer never came), "started_at", "rows"}``."""
        if self._missing:
            return None
        path = str(Path(csv_path).resolve())
        digest = file_digest(path)
        u = uploads_table
        with self.engine.connect() as conn:
            mine = conn.execute(sa.select(files_table.c.run_id).where(files_table.c.path == path)).scalar()
            earlier = conn.execute(
                sa.select(u)
                .where(u.c.content_hash == digest, u.c.status != "confirmed")
                .order_by(u.c.started_at.desc())
                .limit(1)
            ).first()
            if earlier is None:
                return None
            later = sa.select(u.c.path).where(u.c.started_at > earlier.started_at, u.c.path != path)
            if earlier.object is not None:
                later = later.where(u.c.object == earlier.object)
            for run in (earlier.run_id, mine):
                if run is not None:
                    later = later.where(sa.or_(u.c.run_id.is_(None), u.c.run_id != run))
            if conn.execute(later.limit(1)).first() is not None:
                return None
        return {
            "path": earlier.path,
            "import_id": earlier.import_id,
            "started_at": float(earlier.started_at),
            "rows": earlier.rows,
        }

    def claimed_imports(self) -> set[str]:
        """Import ids some upload record already holds (never to be claimed for another file)."""
        if self._missing:
            return set()
        with self.engine.connect() as conn:
            q = sa.select(uploads_table.c.import_id).where(uploads_table.c.import_id.is_not(None))
            return {str(r[0]) for r in conn.execute(q)}

    def uploads(self, obj: str | None = None) -> list[dict[str, Any]]:
        """The upload records (of ``obj``, or all), oldest first."""
        if self._missing:
            return []
        q = sa.select(uploads_table).order_by(uploads_table.c.started_at)
        if obj:
            q = q.where(uploads_table.c.object == obj)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def _uploads_confirmed(self, conn: sa.Connection, path: str, import_id: str | None) -> None:
        cond = uploads_table.c.path == path
        if import_id:
            cond = sa.or_(cond, uploads_table.c.import_id == import_id)
        conn.execute(uploads_table.update().where(cond).values(status="confirmed", updated_at=_now()))

    # ------------------------------------------------------------------------------------ guardrail

    def count(self, obj: str) -> int:
        """How many keys of ``obj`` Connectif has confirmed."""
        if self._missing:
            return 0
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(state_table).where(state_table.c.object == obj))
                .scalar_one()
            )

    def empty_masks(self, obj: str, key_hashes: Iterable[int]) -> dict[int, int | None]:
        """Key hash -> the confirmed row's empty-field mask (None: confirmed before masks were kept) for the
        given keys that are confirmed."""
        wanted = sorted({int(h) for h in key_hashes})
        out: dict[int, int | None] = {}
        if self._missing or not wanted:
            return out
        try:
            with self.engine.connect() as conn:
                for i in range(0, len(wanted), _LOOKUP_BATCH):
                    q = sa.select(state_table.c.key_hash, state_table.c.empty_mask).where(
                        state_table.c.object == obj, state_table.c.key_hash.in_(wanted[i : i + _LOOKUP_BATCH])
                    )
                    out.update({int(k): (None if m is None else int(m)) for k, m in conn.execute(q)})
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before masks, opened read-only
            return {h: None for h in wanted}
        return out

    # --------------------------------------------------------------------------------------- alerts

    def alert_transition(self, source: str, kind: str, active: bool, detail: str | None = None) -> str | None:
        """Record the state of alert (``source``, ``kind``); ``"raised"`` when it just became active,
        ``"cleared"`` when it just stopped being active, None when nothing changed (nobody is told twice)."""
        self._write()
        now = _now()
        key = (alerts_table.c.source == source) & (alerts_table.c.kind == kind)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(alerts_table.c.active).where(key).with_for_update()).first()
            before = bool(row[0]) if row is not None else False
            if row is None:
                if not active:
                    return None  # never raised: there is nothing to clear
                conn.execute(
                    alerts_table.insert().values(source=source, kind=kind, active=True, detail=detail, changed_at=now)
                )
            elif before != active:
                conn.execute(alerts_table.update().where(key).values(active=active, detail=detail, changed_at=now))
            if before == active:
                return None
        return "raised" if active else "cleared"

    def alerts(self, source: str | None = None) -> list[dict[str, Any]]:
        """The recorded alert states (of ``source``, or all), active ones first."""
        if self._missing:
            return []
        q = sa.select(alerts_table).order_by(alerts_table.c.active.desc(), alerts_table.c.source, alerts_table.c.kind)
        if source:
            q = q.where(alerts_table.c.source == source)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(q)]
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # a store from before alerts, read-only
            return []

    # ------------------------------------------------------------------------------------ purchases

    def purchases_done(self, purchase_ids: Iterable[str]) -> set[str]:
        """The ids among ``purchase_ids`` that Connectif already has (confirmed or answered duplicate)."""
        ids = list(purchase_ids)
        if self._missing or not ids:
            return set()
        out: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(ids), _LOOKUP_BATCH):
                q = sa.select(purchases_table.c.purchase_id).where(
                    purchases_table.c.purchase_id.in_(ids[i : i + _LOOKUP_BATCH]),
                    purchases_table.c.status.in_(PURCHASE_DONE),
                )
                out.update(r[0] for r in conn.execute(q))
        return out

    def record_purchase(self, purchase_id: str, status: str, detail: str | None = None) -> None:
        """Record the outcome of sending one purchase: ``confirmed``, ``duplicate`` (409: Connectif already
        has it) or ``failed`` (sent again next time)."""
        self._write()
        if status not in ("confirmed", "duplicate", "failed"):
            raise ValueError(f"status must be confirmed, duplicate or failed, got {status!r}")
        with self.engine.begin() as conn:
            conn.execute(purchases_table.delete().where(purchases_table.c.purchase_id == purchase_id))
            conn.execute(
                purchases_table.insert().values(
                    purchase_id=purchase_id, status=status, detail=detail, updated_at=_now()
                )
            )

    def purchase_statuses(self) -> Iterator[dict[str, Any]]:
        if self._missing:
            return
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(purchases_table).order_by(purchases_table.c.purchase_id)):
                yield dict(r._mapping)

    # ------------------------------------------------------------------------------------- erasures

    def record_erasure(self, request_id: str, email: str, outcome: str, run: str) -> str:
        """Record how Connectif answered the deletion of one request's contact, for job run ``run``; returns
        the outcome kept. ``absent`` after an earlier ``deleted`` of the same request and email stays
        ``deleted``: the 404 is the earlier try's own deletion, not a contact Connectif never had."""
        self._write()
        if outcome not in ERASURE_OUTCOMES:
            raise ValueError(f"outcome must be one of {ERASURE_OUTCOMES}, got {outcome!r}")
        t = erasures_table
        with self.engine.begin() as conn:
            earlier = conn.execute(sa.select(t.c.email, t.c.outcome).where(t.c.request_id == request_id)).first()
            if earlier is not None and earlier.email == email and earlier.outcome == "deleted":
                outcome = "deleted"
            conn.execute(t.delete().where(t.c.request_id == request_id))
            conn.execute(
                t.insert().values(request_id=request_id, email=email, outcome=outcome, run=run, recorded_at=_now())
            )
        return outcome

    def erasure_counts(self, run: str) -> dict[str, int]:
        """Requests finished by job run ``run`` (all its tries), per outcome."""
        if self._missing:
            return {}
        t = erasures_table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.outcome, sa.func.count()).where(t.c.run == run).group_by(t.c.outcome))
            return {str(outcome): int(n) for outcome, n in rows}


_HASHES_SQL = "SELECT key_hash, row_hash, COALESCE(source_hash, 0) FROM connectif_sync_state WHERE object = ?"


def _sqlite_int_columns(conn: sa.Connection, sql: str, obj: str, ncols: int) -> tuple[np.ndarray, ...]:
    import itertools

    raw = conn.connection.driver_connection
    assert raw is not None
    n = raw.execute("SELECT count(*) FROM connectif_sync_state WHERE object = ?", (obj,)).fetchone()[0]
    cur = raw.execute(sql, (obj,))
    cur.arraysize = 10_000
    flat = np.fromiter(itertools.chain.from_iterable(cur), dtype=np.int64, count=ncols * n)
    return tuple(flat[i::ncols].copy() for i in range(ncols))


def _read_snapshot(conn: sa.Connection, obj: str) -> np.ndarray | None:
    """The object's snapshot as an ``(n, 3)`` int64 array sorted by key hash, or None when there is none."""
    try:
        row = conn.execute(
            sa.select(snapshots_table.c.rows, snapshots_table.c.data).where(snapshots_table.c.object == obj)
        ).first()
    except sa.exc.OperationalError:  # a store created before snapshots, opened read-only
        return None
    if row is None:
        return None
    arr = np.frombuffer(row.data, dtype="<i8").astype(np.int64).reshape(-1, 3)
    if len(arr) != row.rows:
        return None
    return arr


def _write_snapshot(conn: sa.Connection, obj: str, base: np.ndarray | None, data: pa.Table) -> None:
    """Rewrite the snapshot after an upsert of ``data``, in the upsert's transaction (so it never lags).

    ``base`` is the snapshot before the upsert; without one (a store from before snapshots) it is rebuilt
    from ``state`` once, inside this transaction. Rows are keyed by key hash, as the full-scan diff is.
    Cost: each confirmation reads and rewrites the whole snapshot (24 bytes per confirmed key, 24 MB per
    million), a fraction of a second, against seconds saved by every full scan that reads it.
    """
    if base is None:
        kh, rh, sh = _sqlite_int_columns(conn, _HASHES_SQL, obj, 3)
        merged = np.stack([kh, rh, sh], axis=1)
    else:
        new = np.stack(
            [
                np.asarray(data.column(c).to_numpy(zero_copy_only=False), dtype=np.int64)
                if c != "source_hash"
                else np.asarray(pc.fill_null(data.column(c), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
                for c in ("key_hash", "row_hash", "source_hash")
            ],
            axis=1,
        )
        new = new[np.unique(new[:, 0], return_index=True)[1]]  # one entry per key hash
        keep = ~np.isin(base[:, 0], new[:, 0], assume_unique=True) if len(base) else np.zeros(0, bool)
        merged = np.concatenate([base[keep], new])
    merged = merged[np.argsort(merged[:, 0], kind="stable")]
    conn.execute(snapshots_table.delete().where(snapshots_table.c.object == obj))
    conn.execute(
        snapshots_table.insert().values(
            object=obj, rows=len(merged), data=merged.astype("<i8").tobytes(), updated_at=_now()
        )
    )


_CREATE_LOCK = 0x636F6E6E_65637466  # pg_advisory_xact_lock key: "connectf" as a 64-bit integer


def _create_tables(engine: sa.Engine, attempts: int = 3) -> None:
    """Create the store's tables, safe when several processes open a fresh store at the same moment.

    ``create_all`` checks then creates, so two workers racing on a fresh PostgreSQL database both see no table
    and one fails (``UniqueViolation`` on ``pg_type``). On PostgreSQL the check and the creation run under a
    transaction-scoped advisory lock, so they are serialised; on any database an "already exists" error from a
    concurrent creator is retried, and the retry's check then finds the tables.
    """
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK})
                metadata.create_all(conn)
                _migrate(conn)
                for index in REJECTED_BROWSE_INDEXES:
                    index.create(conn, checkfirst=True)
            return
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
            # IntegrityError: the pg_type/pg_class unique index of a concurrently created table.
            text = str(exc).lower()
            concurrent = isinstance(exc, sa.exc.IntegrityError) or any(
                m in text for m in ("already exists", "duplicate column")
            )
            if not concurrent or attempt == attempts - 1:
                raise


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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL: readers never block the writer and each commit is one append; NORMAL sync keeps it safe from
    corruption (a power cut may forget the last commits, which then are simply sent again)."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def parse_ts(value: str | datetime) -> datetime:
    """A stored timestamp text (``YYYY-MM-DD HH:MM:SS[.f]``, ``T`` or space) as a naive datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime.fromisoformat(value.strip().replace("Z", "")).replace(tzinfo=None)
