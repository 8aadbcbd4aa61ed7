"""The commit ledger: which chunk files a run wrote, and committing the rows Connectif confirmed.

Why a module of its own: this is the only writer of the confirmed state, and the only place that decides, from
an import's answer, which rows of a file Connectif took (a row it cannot prove goes again next run).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from collections.abc import Mapping as AbcMapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from connectif_sync.chunk import read_manifest
from connectif_sync.extract import adbc_connect
from connectif_sync.store.base import StoreBase
from connectif_sync.store.index import _read_snapshot, _write_snapshot
from connectif_sync.store.schema import _LOOKUP_BATCH, _now, files_table, pending_table, state_table
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


class Ledger(StoreBase):
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

    def _upsert_state(self, obj: str, rows: pa.Table, now: datetime) -> None:
        """Write ``rows`` (manifest rows Connectif confirmed) into ``state``, by each database's bulk path."""
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
        if self.engine.dialect.name == "sqlite":
            self._upsert_sqlite(obj, data.sort_by([("key", "ascending")]), now)
            return
        data = data.append_column("object", pa.array([obj] * rows.num_rows, pa.string())).append_column(
            "confirmed_at", pa.array([now.strftime("%Y-%m-%d %H:%M:%S")] * rows.num_rows, pa.string())
        )
        if self._adbc:
            self._upsert_adbc(data)
        else:
            self._upsert_rows(obj, data.sort_by([("key", "ascending")]), now)  # the B-tree fills in key order

    def _upsert_adbc(self, data: pa.Table) -> None:
        """PostgreSQL through ADBC: COPY into a temporary table, then one ``INSERT ... ON CONFLICT``."""
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

    def _upsert_sqlite(self, obj: str, data: pa.Table, now: datetime) -> None:
        """SQLite: the driver's executemany, and the snapshot rewritten in the same transaction.

        The object and the time are the same for every row: written once into the statement (SQLite quoting),
        so that the driver binds six values per row instead of eight (the binding is most of this loop's cost,
        bench/README.md)."""
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

    def _upsert_rows(self, obj: str, data: pa.Table, now: datetime) -> None:
        """Other databases through SQLAlchemy: PostgreSQL without ADBC upserts, MySQL deletes and inserts."""
        records = data.to_pylist()
        for r in records:
            r["confirmed_at"] = now
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                stmt = pg_insert(state_table)
                updated = ("key_hash", "row_hash", "source_hash", "source_updated_at", "confirmed_at", "empty_mask")
                stmt = stmt.on_conflict_do_update(
                    index_elements=[state_table.c.object, state_table.c.key],
                    set_={c: stmt.excluded[c] for c in updated},
                )
                conn.execute(stmt, records)
                return
            for i in range(0, len(records), _LOOKUP_BATCH):
                part = records[i : i + _LOOKUP_BATCH]
                keys = [r["key"] for r in part]
                conn.execute(state_table.delete().where(state_table.c.object == obj, state_table.c.key.in_(keys)))
                conn.execute(state_table.insert(), part)
