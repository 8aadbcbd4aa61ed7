"""The commit ledger: which chunk files a run wrote, and committing the rows Connectif confirmed.

Why a module of its own: this is the only writer of the confirmed state, and the only place that decides, from
an import's answer, which rows of a file Connectif took (a row it cannot prove goes again next run).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connectif_sync.chunk import read_manifest, updated_text
from connectif_sync.store import blocks
from connectif_sync.store.index import IndexReads, _read_snapshot, _write_snapshot
from connectif_sync.store.schema import (
    _LOOKUP_BATCH,
    _now,
    files_table,
    pending_table,
    state_blocks_table,
    state_table,
)
from connectif_sync.store.uploads import mark_uploads_confirmed


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


class Ledger(IndexReads):
    """Files written by runs, rows pending retry, and confirming imports into the state."""

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

        One transaction: the confirmed rows are appended as blocks (:mod:`~connectif_sync.store.blocks`),
        and the file, its pending rows and its upload are marked with them, or nothing is.
        """
        self._write()
        obj, ok, bad, reasons = _split_lines(csv_path, failed_lines)
        now = _now()
        resolved = str(Path(csv_path).resolve())
        with self.engine.begin() as conn:
            self._append_state(conn, obj, ok, now)
            _record_pending(conn, obj, ok, bad, reasons, resolved, now)
            conn.execute(
                files_table.update()
                .where(files_table.c.path == resolved)
                .values(status="confirmed", confirmed_at=now, confirmed_rows=ok.num_rows, failed_rows=bad.num_rows)
            )
            mark_uploads_confirmed(conn, resolved, import_id)
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

    def refresh_source_hashes(self, obj: str, rows: pa.Table) -> int:
        """Store the source hash a full scan found for rows it read whole and found unchanged (their CSV row
        hash is the confirmed one, their source hash is not the stored one); returns how many were stored.

        Why: a full scan reads in full every row whose source hash the state does not have. Without this, a
        row whose source changed in a way its CSV does not show (an email's case or spaces, a column the
        mapping reads but sends the same), or that was confirmed by a version that stored no source hash,
        was read in full by every full scan, forever; a whole table of them (an upgrade, a clean-up of the
        source) made the probe give up for good.

        ``rows``: block columns (key, key_hash, row_hash, source_hash, empty_mask). Compare-and-set, in one
        transaction that holds the object as a confirmation does: only rows whose confirmed row hash is
        still ``row_hash`` are stored, so a confirmation that landed since the scan read them always wins.
        """
        self._write()
        if rows.num_rows == 0:
            return 0
        now = _now()
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":  # the write lock first: the check below reads what is final
                conn.execute(sa.text("DELETE FROM connectif_sync_snapshots WHERE 1 = 0"))
            elif self.engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _object_lock(obj)})
            current = self._hashes(conn, obj)  # (key hash, row hash, source hash), sorted by key hash
            key_hash = np.asarray(rows.column("key_hash").to_numpy(), np.int64)
            at = np.minimum(np.searchsorted(current[:, 0], key_hash), max(len(current) - 1, 0))
            found = current[at, 0] == key_hash if len(current) else np.zeros(len(key_hash), bool)
            row_hash = np.asarray(rows.column("row_hash").to_numpy(), np.int64)
            source_hash = np.asarray(rows.column("source_hash").to_numpy(), np.int64)
            keep = found & (current[at, 1] == row_hash) & (current[at, 2] != source_hash) if len(current) else found
            if not keep.any():
                return 0
            self._append_state(conn, obj, rows.filter(pa.array(keep)), now, base=current)
        return int(keep.sum())

    def _append_state(
        self, conn: sa.Connection, obj: str, rows: pa.Table, now: datetime, base: np.ndarray | None = None
    ) -> None:
        """Append ``rows`` (manifest rows Connectif confirmed) to the confirmed state of ``obj``, in ``conn``'s
        transaction; on SQLite the snapshot follows in the same transaction. Compacts when due. ``base``: the
        confirmed hashes before these rows, when the caller read them in this transaction already."""
        if rows.num_rows == 0:
            return
        data = blocks.from_manifest(rows)
        if self.engine.dialect.name != "sqlite":
            if self.engine.dialect.name == "postgresql":  # confirmations of one object one after the other
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _object_lock(obj)})
            blocks.append(conn, obj, data, now)
            count, _ = blocks.sizes(conn, obj)
            if count > blocks.COMPACT_BLOCKS:
                self._compact(conn, obj, now)
            return
        # SQLite: the snapshot follows. The write lock first, so that what is read below is final; the new
        # snapshot is then merged in a thread while this one writes the blocks (both release the GIL): a
        # million-row first run's commit 0.56 -> 0.44 s (bench/README.md, session 14).
        conn.execute(sa.text("DELETE FROM connectif_sync_snapshots WHERE 1 = 0"))
        base = _read_snapshot(conn, obj) if base is None else base
        if base is None and blocks.sizes(conn, obj)[0] == 0 and not _has_state_rows(conn, obj):
            base = np.empty((0, 3), np.int64)  # nothing was confirmed before these blocks
        with ThreadPoolExecutor(1, thread_name_prefix="connectif-sync-merge") as pool:
            merging = pool.submit(blocks.latest_hashes, [base, blocks.hashes_of(data)]) if base is not None else None
            blocks.append(conn, obj, data, now)
            # a store from before snapshots: ``state`` and every block, these included
            merged = merging.result() if merging is not None else self._merged_hashes(conn, obj)
        _write_snapshot(conn, obj, merged)
        count, held = blocks.sizes(conn, obj)
        if count > blocks.COMPACT_BLOCKS or held > 2 * len(merged) + blocks.BLOCK_ROWS:
            self._compact(conn, obj, now)

    def _compact(self, conn: sa.Connection, obj: str, now: datetime) -> None:
        """Rewrite the confirmed state of ``obj`` as the fewest blocks: its latest row per key, ``state`` rows
        of earlier versions included (they are removed from ``state``). The rows readers see do not change."""
        columns = blocks.SCHEMA.names
        t = state_table
        result = conn.execute(sa.select(*(t.c[c] for c in columns)).where(t.c.object == obj))
        legacy = [
            pa.Table.from_pylist([dict(r._mapping) for r in part], schema=blocks.SCHEMA)
            for part in result.partitions(100_000)
        ]
        merged = blocks.latest([*legacy, *self._blocks(conn, obj, tuple(columns))], columns)
        conn.execute(t.delete().where(t.c.object == obj))
        conn.execute(state_blocks_table.delete().where(state_blocks_table.c.object == obj))
        blocks.append(conn, obj, merged, now)


def _has_state_rows(conn: sa.Connection, obj: str) -> bool:
    """Whether ``state`` (rows confirmed by versions before the blocks) holds any row of ``obj``."""
    q = sa.select(state_table.c.key).where(state_table.c.object == obj).limit(1)
    return conn.execute(q).first() is not None


def _object_lock(obj: str) -> int:
    """A 63-bit advisory-lock key per object (PostgreSQL), apart from the table-creation lock."""
    return int.from_bytes(hashlib.blake2b(f"connectif_sync_state:{obj}".encode(), digest_size=8).digest()) >> 1


def _split_lines(
    csv_path: str | Path, failed_lines: Iterable[int] | AbcMapping[int, str]
) -> tuple[str, pa.Table, pa.Table, dict[int, str]]:
    """``(object, confirmed rows, failed rows, reason per failed line)`` of a chunk file's manifest."""
    header, manifest = read_manifest(csv_path)
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
    if not reasons:
        return str(obj), manifest, manifest.slice(0, 0), reasons
    failed_mask = pc.is_in(lines, pa.array(sorted(reasons), pa.int64()))
    return str(obj), manifest.filter(pc.invert(failed_mask)), manifest.filter(failed_mask), reasons


def _record_pending(
    conn: sa.Connection,
    obj: str,
    ok: pa.Table,
    bad: pa.Table,
    reasons: dict[int, str],
    path: str,
    now: datetime,
) -> None:
    """Rows now confirmed leave ``pending``; the failed ones enter it (replacing an older entry of their key)."""
    pending = [r[0] for r in conn.execute(sa.select(pending_table.c.key).where(pending_table.c.object == obj))]
    if pending:  # few: the rows Connectif rejected in this run's earlier files
        passed = pa.array(pending, pa.string()).filter(pc.is_in(pa.array(pending, pa.string()), ok.column("key")))
        keys = passed.to_pylist()
        for i in range(0, len(keys), _LOOKUP_BATCH):
            conn.execute(
                pending_table.delete().where(
                    pending_table.c.object == obj, pending_table.c.key.in_(keys[i : i + _LOOKUP_BATCH])
                )
            )
    if bad.num_rows:  # manifests hold the source's timestamps; the state store keeps them as text
        bad = bad.set_column(bad.schema.get_field_index("updated_at"), "updated_at", updated_text(bad["updated_at"]))
    for row in bad.to_pylist():
        conn.execute(pending_table.delete().where(pending_table.c.object == obj, pending_table.c.key == row["key"]))
        conn.execute(
            pending_table.insert().values(
                object=obj,
                key=row["key"],
                path=path,
                line=row["line"],
                reason=reasons[row["line"]],
                source_updated_at=row["updated_at"],
                recorded_at=now,
            )
        )
