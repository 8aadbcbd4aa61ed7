"""The probe: a second full scan that reads most rows' source hash only.

On a table keyed by an integer, the database computes each row's source hash itself (the ``_sqlite_hash``
extension on SQLite, SQL on PostgreSQL and MySQL), so only each row's key and hash are read (and the latest
``updated_at``, once); the rows whose hash Connectif confirmed are done, and only the others are read in full by
key. Reading two columns instead of every value is most of a second run's cost saved (bench/README.md). The
hashes are those of the full read (:func:`~connectif_sync.diff.source_hashes`), so confirmed state written by
either path serves both.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from connectif_sync.client_hash import table_versions
from connectif_sync.diff import database_hashes, signed
from connectif_sync.extract import (
    PROBE_HASH_COLUMN,
    RangeReads,
    arrow_connect,
    arrow_source,
    integer_ranges,
    latest_update_query,
    probe_query,
    read_rows,
    read_table,
    resume_probe,
    row_versions,
    source_dialect,
    source_hash_sql,
    sqlite_hash_extension,
)
from connectif_sync.mappings import Mapping
from connectif_sync.prepare import Prepared, chunk_high, prepare
from connectif_sync.store import StateIndex

PROBE_READERS = 3
"""Connections that read a probe's pages at once, one more than a full read's
(:data:`~connectif_sync.extract.DEFAULT_READERS`): each reader waits for its query, then works on the page it
got (compares it, reads its unconfirmed rows in full, shapes them), so with two the machine's cores were idle
part of a full scan; a page in flight holds keys and hashes (16-24 bytes a row), not whole rows, so a third
costs a few MB. In-process, alternating with two: PostgreSQL full scans 0.660-0.708 -> 0.594-0.650 s (medians
of 6), MySQL 1.001 -> 0.927 (5); four were no better than three (bench/README.md, session 18)."""
PROBE_MIN_KNOWN = 0.5  # a probe is used when at least this share of the first range's rows is confirmed
PROBE_SAMPLE = 16
"""The probe decides whether it pays on the first 1/16 of the first range's keys (about 2,000 rows), not the
whole range, which was read a second time by its page: 3% more of the database's work and 0.03-0.04 s on a
full scan's critical path for a decision a sample makes as well. A sample of fewer than
:data:`PROBE_SAMPLE_MIN_ROWS` rows (sparse keys) is made up by the whole first range."""
PROBE_SAMPLE_MIN_ROWS = 200
PROBE_FULL_READ = 0.25  # a probed chunk with more unconfirmed rows than this share is read whole instead
PROBE_SPAN = 8
"""Key ranges (and pages) of a probe hold this many times ``chunk_rows`` rows. A probe's rows are two integers
(16 bytes), and what a page leaves to read in full is a few percent of it: with pages the size of a chunk, a
second run validated, hashed and wrote 31 slivers of a few hundred rows for a million, and the stages' fixed
costs per chunk were about a quarter of the run's CPU (bench/README.md, session 7). Rows read in full still
come in chunks of at most ``chunk_rows``."""


def probe_pages(ranges: list[tuple[int, int]], readers: int) -> list[tuple[int, int]]:
    """The key ranges grouped into pages of at most :data:`PROBE_SPAN` consecutive ranges, as many pages as
    a multiple of ``readers`` allows and as even as can be: page ``i`` is read by reader ``i % readers``
    (:class:`~connectif_sync.extract.RangeReads`), so the readers' shares differ by a range per page at most.
    34 ranges cut every 8 made pages of 8, 8, 8, 8 and 2: one reader read 18 ranges and the other 16, and a
    PostgreSQL full scan waited 0.1-0.2 s for the first (bench/README.md, session 9); now 6 pages of 5-6."""
    if not ranges:
        return []
    readers = max(1, readers)
    count = min(len(ranges), readers * -(-len(ranges) // (PROBE_SPAN * readers)))
    bounds = [i * len(ranges) // count for i in range(count + 1)]
    return [(ranges[a][0], ranges[b - 1][1]) for a, b in itertools.pairwise(bounds)]


def probe(
    source_url: str, mapping: Mapping, index: StateIndex | None, fingerprint: np.uint64, chunk_rows: int,
    readers: int, started: Started | None = None,
) -> Iterator[Prepared] | None:  # fmt: skip
    """The prepared chunks of a probed full scan on PostgreSQL, MySQL or SQLite, or None where a probe does
    not apply (another database, no ``_sqlite_hash`` extension, a SQL source, no integer key, an empty index)
    or does not pay (the first range mostly unconfirmed, e.g. confirmed by a version that hashed otherwise, or
    mostly REAL/BLOB values, which the SQLite hash leaves to the full read).

    Each page of the key (at most :data:`PROBE_SPAN` chunks' ranges, :func:`probe_pages`) is read as (key,
    source hash computed by the database: ``extract.source_hash_sql`` on PostgreSQL and MySQL, the
    ``_sqlite_hash`` extension on SQLite); the rows whose hash Connectif did not confirm are read in full by
    key (``IN``), hashed and shaped as in any other run, all in the reader threads. The latest ``updated_at``
    is read once, before the pages. ``started``: the pages, started by :func:`start` before ``index`` was
    loaded (whoever started them closes them).
    """
    if index is None or len(index) == 0 or index.source_hashes is None:
        return None
    started = started or start(source_url, mapping, fingerprint, chunk_rows, readers)
    return started.attach(index) if started is not None else None


def start(source_url: str, mapping: Mapping, fingerprint: np.uint64, chunk_rows: int, readers: int) -> Started | None:
    """A probe's pages, being read from now on, or None where a probe does not apply to the source (see
    :func:`probe`). A full scan starts them before it loads the confirmed state, which the pages wait for
    (:meth:`Started.attach`): the database works while that state is read (bench/README.md, session 11)."""
    kind = arrow_source(source_url)
    sqlite = kind == "sqlite"
    if kind is None or (sqlite and sqlite_hash_extension() is None) or not mapping.order_by:
        return None
    ranges = integer_ranges(source_url, mapping, chunk_rows)
    if not ranges:
        return None
    dialect = source_dialect(source_url)
    if not sqlite and source_hash_sql(mapping, dialect, signed(fingerprint)) is None:
        return None
    return Started(source_url, mapping, dialect, fingerprint, chunk_rows, readers, ranges)


class Started:
    """A probe whose pages are being read: the high-water mark read first, then the pages started, whose
    reader threads wait for :meth:`attach` to say whether the probe pays. Whoever starts one closes it (or
    attaches it), used or not."""

    def __init__(
        self, url: str, mapping: Mapping, dialect: sa.Dialect, fingerprint: np.uint64, chunk_rows: int,
        readers: int, ranges: list[tuple[int, int]],
    ) -> None:  # fmt: skip
        self.pager = _Pager(url, mapping, dialect, fingerprint, chunk_rows)
        self.pages: RangeReads | None = None
        fp, sqlite, v = self.pager.fp, arrow_source(url) == "sqlite", self.pager.versions
        # The start of the first range (then the range, if that is too few rows), read once more by this
        # thread to decide whether the probe pays.
        lo, hi = ranges[0]
        self.first = [
            (
                probe_query(mapping, dialect, fp, id_range=r, versions=v),
                resume_probe(mapping, dialect, fp, id_range=r, versions=v),
            )
            for r in ((lo, lo + max(1, (hi - lo) // PROBE_SAMPLE)), ranges[0])
        ]
        self._conn = contextlib.ExitStack()
        try:
            self.conn = self._conn.enter_context(arrow_connect(url, source_hash=sqlite))
            self.top = _latest_update(self.conn, url, mapping, dialect, chunk_rows)  # before any page is read
            spans = probe_pages(ranges, readers)
            sqls = [probe_query(mapping, dialect, fp, id_range=r, versions=v) for r in spans]
            resumes = [resume_probe(mapping, dialect, fp, id_range=r, versions=v) for r in spans]
            self.pages = RangeReads(url, sqls, chunk_rows * PROBE_SPAN, readers, resumes, mapping.order_by,
                                    self.pager.transform, source_hash=sqlite)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def attach(self, index: StateIndex) -> Iterator[Prepared] | None:
        """The probe's chunks once the confirmed state is loaded, or None (closed) when the first range says
        the probe does not pay: mostly unconfirmed, e.g. by a version that hashed otherwise."""
        pages, pager = self.pages, self.pager
        assert pages is not None
        try:
            with self._conn:
                index.prepare_sources()  # the look-up table, built once before the threads share the index
                for sql, resume in self.first:
                    first = read_table(self.conn, pager.url, sql, pager.chunk_rows, resume, pager.mapping.order_by)
                    if first.num_rows >= PROBE_SAMPLE_MIN_ROWS:
                        break
            go = first.num_rows > 0 and index.find_sources(pager.hashes(first))[0].mean() >= PROBE_MIN_KNOWN
        except BaseException:
            self.close()
            raise
        self.pager.decide(go, index)
        if not go:
            self.close()
            return None
        top = self.top

        def chunks() -> Iterator[Prepared]:
            with pages:
                yield Prepared.empty(high=top)  # the run's high-water mark
                yield from pages

        return chunks()

    def close(self) -> None:
        """Stop the pages (their readers told the probe is not used first) and close the connection."""
        self.pager.decide(False, None)
        if self.pages is not None:
            self.pages.close()
        self._conn.close()


class _Pager:
    """What the reader threads do with each probed page: the rows that are not confirmed, read in full and
    shaped (:meth:`transform`), once the first range said the probe pays (:meth:`decide`)."""

    def __init__(
        self, url: str, mapping: Mapping, dialect: sa.Dialect, fingerprint: np.uint64, chunk_rows: int
    ) -> None:
        self.url, self.mapping, self.dialect = url, mapping, dialect
        self.index: StateIndex | None = None
        self.fingerprint, self.fp, self.chunk_rows = fingerprint, signed(fingerprint), chunk_rows
        self.versions = row_versions(url, mapping)  # the probe reads row versions (PostgreSQL tables)
        self._decided = threading.Event()
        self._go = False

    def decide(self, go: bool, index: StateIndex | None) -> None:
        """Once: whether the pages are used, with the confirmed state they are compared with (a later call,
        e.g. :meth:`Started.close` after the chunks were read, changes nothing)."""
        if self._decided.is_set():
            return
        self._go, self.index = go and index is not None, index
        self._decided.set()

    def hashes(self, probed: pa.Table) -> np.ndarray:
        """The source hashes of a probed page: computed by the database, or from its rows' versions."""
        if self.versions:
            return table_versions(probed, self.mapping, self.fp)
        return database_hashes(probed.column(PROBE_HASH_COLUMN))

    def transform(self, conn: Any, probed: pa.Table) -> Iterator[Prepared]:
        """In a reader thread: the rows of one probed page that are not confirmed, read in full and shaped, in
        chunks of at most ``chunk_rows`` rows (the first also carries the page's confirmed rows)."""
        self._decided.wait()
        index = self.index
        if not self._go or index is None or probed.num_rows == 0:
            return
        m, chunk_rows = self.mapping, self.chunk_rows
        known, at = index.find_sources(self.hashes(probed))
        ids = probed.column(m.order_by[0]).combine_chunks()
        if (~known).mean() > PROBE_FULL_READ:  # mostly unconfirmed: read the page's key range whole
            values = ids.to_numpy()  # in key order
            for start in range(0, len(values), chunk_rows):
                lo, hi = int(values[start]), int(values[min(start + chunk_rows, len(values)) - 1]) + 1
                full = read_rows(conn, self.url, m, self.dialect, chunk_rows, id_range=(lo, hi), source_hash=self.fp)
                yield prepare(full, m, self.fingerprint, index)
            return
        wanted = ids.filter(pa.array(~known)).to_pylist()
        step = max(1, int(chunk_rows * PROBE_FULL_READ))  # at most what a chunk's read by key ever asked for
        for start in range(0, max(len(wanted), 1), step):  # at least once: the confirmed rows go with the first
            rest = read_rows(conn, self.url, m, self.dialect, chunk_rows, ids=wanted[start : start + step],
                             source_hash=self.fp)  # fmt: skip
            if start:
                yield prepare(rest, m, self.fingerprint, index)
                continue
            # Rows read again count once: the probe's known ones plus whatever the second read returned (a row
            # deleted in between is simply not extracted, as with any read that is not one transaction).
            yield prepare(rest, m, self.fingerprint, index, None, at[known], int(known.sum()) + rest.num_rows)


def _latest_update(conn: Any, url: str, mapping: Mapping, dialect: sa.Dialect, chunk_rows: int) -> str | None:
    """The latest ``updated_at`` of the source, as text (the run's high-water mark), read before the ranges.

    Read before them, it is at most the latest of the rows they read: a row updated during the run is read
    again by the next incremental run (which finds it unchanged if it was read after its update), never
    missed."""
    sql = latest_update_query(mapping, dialect)
    return chunk_high(read_table(conn, url, sql, chunk_rows), mapping) if sql is not None else None
