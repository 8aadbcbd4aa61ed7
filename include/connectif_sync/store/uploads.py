"""Uploads: every upload of a chunk file to Connectif, recorded before it starts.

Why a module of its own: a retried task, or a later run that wrote a file of the same content, re-attaches to
the import an earlier try made instead of importing the same rows twice; the record outlives tasks and runs.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectif_sync.chunk import read_manifest
from connectif_sync.store.base import StoreBase
from connectif_sync.store.schema import _now, files_table, uploads_table

KEEP_UPLOADS = timedelta(days=30)
"""Upload records older than this are forgotten (an import that old is never re-attached to)."""


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes: two chunk files with the same digest hold the same rows in the same lines."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mark_uploads_confirmed(conn: sa.Connection, path: str, import_id: str | None) -> None:
    """The uploads of ``path`` (or that made ``import_id``) are confirmed: never re-attached to again."""
    cond = uploads_table.c.path == path
    if import_id:
        cond = sa.or_(cond, uploads_table.c.import_id == import_id)
    conn.execute(uploads_table.update().where(cond).values(status="confirmed", updated_at=_now()))


class Uploads(StoreBase):
    """Recording uploads and finding an earlier one to re-attach to."""

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
