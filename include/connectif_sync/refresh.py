"""Source hashes to refresh: confirmed rows a full scan read whole and found unchanged.

A full scan reads in full only the rows whose source hash the state does not have (:mod:`connectif_sync.probe`,
:func:`connectif_sync.prepare.prepare`). A row whose source changed in a way its CSV does not show (an email's
case or spaces, a column read but sent the same), or that a version before source hashes confirmed, is read in
full, found unchanged and not sent; unless its new source hash is stored, every later full scan reads it again.
:class:`SourceHashRefresh` collects such rows during a run and stores their hashes when it ends
(:meth:`~connectif_sync.store.StateStore.refresh_source_hashes`, a compare-and-set).

Why a file: a whole table of such rows (after an upgrade, or a clean-up of the source) is about 60 MB per million
rows, which would otherwise stay in memory until the run ends. The file sits next to the run's chunk files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from connectif_sync.diff import empty_masks
from connectif_sync.store import StateIndex, StateStore
from connectif_sync.store.blocks import SCHEMA


class SourceHashRefresh:
    """One full scan's rows to refresh, spilled to an Arrow file in ``out_dir`` until :meth:`apply`."""

    def __init__(self, out_dir: str | Path, obj: str, columns: list[str]) -> None:
        self.out_dir, self.obj, self.columns = Path(out_dir), obj, columns
        self.path: Path | None = None
        self._writer: ipc.RecordBatchFileWriter | None = None

    def add(
        self,
        index: StateIndex,
        keys: pa.Array,
        valid: pa.Table,
        unchanged: np.ndarray,
        key_hash: np.ndarray,
        row_hash: np.ndarray,
        source_hash: np.ndarray,
    ) -> None:
        """Keep the ``unchanged`` rows of a validated chunk whose stored source hash is not ``source_hash``
        (all arrays per row of ``valid``; a source hash of 0 is none, nothing to store)."""
        at = np.flatnonzero(unchanged)
        if len(at) == 0 or index.source_hashes is None:
            return
        found, pos = index.positions(key_hash[at])
        stale = found & (source_hash[at] != 0) & (index.source_hashes[pos] != source_hash[at])
        if not stale.any():
            return
        rows = at[stale]
        pick = pa.array(rows)
        table = pa.table(
            {
                "key": keys.take(pick),
                "key_hash": pa.array(key_hash[rows]),
                "row_hash": pa.array(row_hash[rows]),
                "source_hash": pa.array(source_hash[rows]),
                "empty_mask": pa.array(empty_masks(valid.take(pick), self.columns)),
            }
        ).cast(SCHEMA)
        if self._writer is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{self.obj}-source-hashes-", suffix=".arrow", dir=self.out_dir)
            os.close(fd)
            self.path = Path(name)
            self._writer = ipc.new_file(str(self.path), SCHEMA)
        self._writer.write_table(table)

    def apply(self, store: StateStore) -> int:
        """Store the kept rows' source hashes (compare-and-set), remove the file; returns how many were stored."""
        if self._writer is None or self.path is None:
            return 0
        self._writer.close()
        self._writer = None
        try:
            with pa.OSFile(str(self.path)) as source:  # read into memory: the file goes below
                rows = ipc.open_file(source).read_all()
            return store.refresh_source_hashes(self.obj, rows)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the file (a run that failed stores nothing; the next full scan finds the rows again)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
