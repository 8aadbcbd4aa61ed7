"""Chunk: UTF-8 CSV files with the header in each, at most ``max_bytes`` as written, never splitting a row.

Files are written with pyarrow's CSV writer, which quotes every text value (``"a ""b"", c"``) and leaves
empty values unquoted, with ``\\n`` line ends. Because every output column is text, the size of a row is
known before writing it: the UTF-8 length of each value, plus 2 quotes and one more per inner quote for
each present value, plus the commas and the newline. That lets the writer cut files exactly at the
limit without rendering twice; tests compare the computed sizes with the files on disk.

Each ``<name>.csv`` gets a companion ``<name>.csv.manifest`` (an Arrow IPC file, fast to write and read:
columns ``line,key,key_hash,row_hash,updated_at,source_hash,empty_mask``, ``line`` being the 1-based data
line of the CSV as in Connectif's error report; the schema metadata names the object and partition). The
state store reads it in :meth:`~connectif_sync.store.StateStore.confirm_file` to commit exactly the rows
Connectif confirmed. ``updated_at`` is the source's timestamp as read (naive UTC) where it is one, else its
text: only the few rows Connectif rejects and each file's first and last need it as text
(:func:`updated_text`), and formatting a million timestamps and comparing their texts cost a first run's
main thread about 0.06 s (bench/README.md, session 15). Manifests written before hold text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from connectif_sync.background import Serial

DEFAULT_MAX_FILE_BYTES = 50 * 1000 * 1000 - 64 * 1024
"""Just under Connectif's 50 MB (read as 50,000,000 bytes, the stricter reading), leaving room for the
multipart envelope of the upload."""

WRITES_AHEAD = 2
"""Chunks handed to the writing thread and not written yet, at most (then the run waits for it)."""
MANIFEST_SUFFIX = ".manifest"
_MANIFEST_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("key", pa.string()),
        ("key_hash", pa.int64()),
        ("row_hash", pa.int64()),
        ("updated_at", pa.string()),
        ("source_hash", pa.int64()),
        ("empty_mask", pa.int64()),
    ]
)


@dataclass
class ChunkFile:
    """One written CSV file and what it holds."""

    path: str
    manifest: str
    object: str
    rows: int
    bytes: int
    partition: str | None = None
    min_updated_at: str | None = None
    max_updated_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _manifest_schema(updated: pa.DataType) -> pa.Schema:
    """The manifest's columns, ``updated_at`` of type ``updated`` (a naive timestamp, or text)."""
    return _MANIFEST_SCHEMA.set(_MANIFEST_SCHEMA.get_field_index("updated_at"), pa.field("updated_at", updated))


def keeps_updated(kind: pa.DataType) -> bool:
    """Whether a manifest keeps an ``updated_at`` of this type as is (a naive timestamp) rather than as text."""
    return pa.types.is_timestamp(kind) and kind.tz is None


def updated_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A manifest's ``updated_at`` as the text the state store keeps (``YYYY-MM-DD HH:MM:SS[.f]``): as written
    by :func:`~connectif_sync.shape.to_text`, which is Arrow's cast for the naive timestamps manifests hold."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())


def manifest_path(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def read_manifest(csv_path: str | Path) -> tuple[dict[str, str], pa.Table]:
    """The manifest of a chunk file: its header (object, partition) and one row per data line."""
    path = manifest_path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"{csv_path}: no manifest {path.name} next to it; was it written by connectif_sync?")
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return meta, table


def header_bytes(columns: list[str]) -> int:
    return sum(len(c.encode("utf-8")) + 2 + c.count('"') for c in columns) + len(columns)


def row_bytes_joined(joined: pa.Array, columns: pa.Table | list[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    """:func:`row_bytes` from the rows already joined with a one-byte separator (as hashing does): the
    joined length holds the values and separators, so only quotes and newline are added."""
    total = np.asarray(pc.binary_length(joined).to_numpy(zero_copy_only=False), dtype=np.int64) + 1
    total += np.asarray(pc.count_substring(joined, '"').to_numpy(zero_copy_only=False), dtype=np.int64)
    for col in columns.columns if isinstance(columns, pa.Table) else columns:
        total += 2 * np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=np.int64)
    return total


def row_bytes(table: pa.Table) -> np.ndarray:
    """The exact size in bytes of each row as pyarrow's CSV writer renders it (all columns text)."""
    n = table.num_rows
    total = np.full(n, table.num_columns, dtype=np.int64)  # commas + newline
    for col in table.columns:
        length = pc.binary_length(col)
        quotes = pc.count_substring(col, '"')
        size = pc.add(pc.add(length, quotes), 2)
        total += np.asarray(pc.fill_null(size, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return total


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", value)[:60] or "_"


def _write_tables(writer: Any, data: pa.Table, mwriter: Any, manifest: pa.Table) -> None:
    writer.write_table(data)
    mwriter.write_table(manifest)


def _close_writers(writer: Any, mwriter: Any) -> None:
    writer.close()
    mwriter.close()


class _OpenFile:
    """One CSV file and its manifest being written: what they hold is counted here, the bytes are written by
    the chunk writer's thread (``writes``)."""

    def __init__(
        self, path: Path, schema: pa.Schema, obj: str, partition: str | None, dry_run: bool, updated: pa.DataType,
        writes: Serial,
    ) -> None:  # fmt: skip
        self.path = path
        self.writes = writes
        self.updated = updated  # the type of its manifest's ``updated_at``
        self.rows = 0
        self.bytes = header_bytes(schema.names)
        self.min_u: str | None = None
        self.max_u: str | None = None
        self.dry_run = dry_run
        self.writer: pa_csv.CSVWriter | None = None
        self.mwriter: Any = None
        if not dry_run:
            self.writer = pa_csv.CSVWriter(str(path), schema)
            meta = {"object": obj} | ({"partition": partition} if partition is not None else {})
            self.mschema = _manifest_schema(updated)
            self.mwriter = pa.ipc.new_file(str(manifest_path(path)), self.mschema.with_metadata(meta))

    def write(self, data: pa.Table, manifest: pa.Table, size: int) -> None:
        if self.writer is not None and self.mwriter is not None:
            lines = pa.array(np.arange(self.rows + 1, self.rows + data.num_rows + 1, dtype=np.int64))
            manifest = manifest.set_column(0, "line", lines).cast(self.mschema)
            self.writes.submit(partial(_write_tables, self.writer, data, self.mwriter, manifest))
        self.rows += data.num_rows
        self.bytes += size
        u = manifest.column("updated_at")
        if u.null_count < len(u):
            bounds = pc.min_max(u)
            lo, hi = updated_text(pa.array([bounds["min"].as_py(), bounds["max"].as_py()], u.type)).to_pylist()
            self.min_u = lo if self.min_u is None or lo < self.min_u else self.min_u
            self.max_u = hi if self.max_u is None or hi > self.max_u else self.max_u

    def close(self) -> None:
        if self.writer is not None and self.mwriter is not None:
            self.writes.submit(partial(_close_writers, self.writer, self.mwriter))


class ChunkWriter:
    """Writes rows to ``<out_dir>/<object>[-<partition>]-NNNN.csv`` files of at most ``max_bytes`` each.

    With ``dry_run`` nothing is written but sizes and file counts are computed exactly the same way. Which
    rows go to which file is decided in the caller's thread; the bytes are written by a thread of their own
    (:class:`~connectif_sync.background.Serial`), in order: 0.1-0.2 CPU s of a million-row first run's main
    thread (bench/README.md, session 18). :meth:`close` waits for them and raises a failed write's error;
    :meth:`stop` ends the thread of a run that failed.
    """

    def __init__(
        self,
        out_dir: str | Path | None,
        obj: str,
        columns: list[str],
        *,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        dry_run: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else Path(".")
        self.obj = obj
        self.schema = pa.schema([(c, pa.string()) for c in columns])
        self.max_bytes = max_bytes
        self.dry_run = dry_run
        self.header = header_bytes(columns)
        if self.header + 1 > max_bytes:
            raise ValueError(f"max_bytes={max_bytes} cannot even hold the CSV header ({self.header} bytes)")
        self._open: dict[str | None, _OpenFile] = {}
        self._writes = Serial("connectif-sync-files", ahead=WRITES_AHEAD)
        self._counter: dict[str | None, int] = {}
        self.files: list[ChunkFile] = []
        if not dry_run:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # Files of an earlier run in the same folder would be mistaken for this run's: remove them.
            stale = re.compile(rf"^{re.escape(obj)}(-[A-Za-z0-9_-]+)?-\d{{4}}\.csv({re.escape(MANIFEST_SUFFIX)})?$")
            for old in self.out_dir.iterdir():
                if stale.match(old.name):
                    old.unlink()

    def _new_file(self, partition: str | None, updated: pa.DataType) -> _OpenFile:
        self._counter[partition] = self._counter.get(partition, 0) + 1
        stem = self.obj if partition is None else f"{self.obj}-{_safe(partition)}"
        path = self.out_dir / f"{stem}-{self._counter[partition]:04d}.csv"
        f = _OpenFile(path, self.schema, self.obj, partition, self.dry_run, updated, self._writes)
        self._open[partition] = f
        return f

    def _close(self, partition: str | None) -> None:
        f = self._open.pop(partition, None)
        if f is None:
            return
        f.close()
        if f.rows:
            self.files.append(
                ChunkFile(
                    path=str(f.path),
                    manifest=str(manifest_path(f.path)),
                    object=self.obj,
                    rows=f.rows,
                    bytes=f.bytes,
                    partition=partition,
                    min_updated_at=f.min_u,
                    max_updated_at=f.max_u,
                )
            )
        elif not self.dry_run:  # once closed
            self._writes.submit(partial(f.path.unlink, missing_ok=True))
            self._writes.submit(partial(manifest_path(f.path).unlink, missing_ok=True))

    def write(
        self, data: pa.Table, manifest: pa.Table, partition: str | None = None, sizes: np.ndarray | None = None
    ) -> np.ndarray:
        """Append rows (``data``: the output columns; ``manifest``: line/key/key_hash/row_hash/updated_at;
        ``sizes``: their :func:`row_bytes` when the caller already has them).

        Returns the mask of rows too big for any file (not written; the caller rejects them).
        """
        data = data.select(self.schema.names).cast(self.schema)
        for optional in ("source_hash", "empty_mask"):
            if optional not in manifest.column_names:
                manifest = manifest.append_column(optional, pa.nulls(manifest.num_rows, pa.int64()))
        manifest = manifest.select(_MANIFEST_SCHEMA.names)
        updated = manifest.schema.field("updated_at").type
        if not keeps_updated(updated):
            manifest = manifest.set_column(4, "updated_at", updated_text(manifest.column("updated_at")))
            updated = pa.string()
        sizes = row_bytes(data) if sizes is None else sizes
        oversize = sizes + self.header > self.max_bytes
        if oversize.any():
            keep = pa.array(np.flatnonzero(~oversize))
            data, manifest, sizes = data.take(keep), manifest.take(keep), sizes[~oversize]
        pos = 0
        n = data.num_rows
        cum = np.cumsum(sizes)
        if (f := self._open.get(partition)) is not None and f.updated != updated:
            self._close(partition)  # a file's manifest holds one type of ``updated_at``: another starts a file
        while pos < n:
            f = self._open.get(partition) or self._new_file(partition, updated)
            room = self.max_bytes - f.bytes
            base = cum[pos - 1] if pos else 0
            fit = int(np.searchsorted(cum[pos:] - base, room, side="right"))
            if fit == 0:
                self._close(partition)  # full (a fresh file always fits one row: oversize ones are gone)
                continue
            f.write(data.slice(pos, fit), manifest.slice(pos, fit), int(cum[pos + fit - 1] - base))
            pos += fit
        return oversize

    def close(self) -> list[ChunkFile]:
        """Close every file once its rows are written; the files written."""
        for partition in list(self._open):
            self._close(partition)
        self._writes.close()
        return self.files

    def stop(self) -> None:
        """Wait for the writes handed over and end the writing thread, without raising (a run that failed:
        its own error is the one to see; its files stay as they are)."""
        self._writes.close(raise_error=False)
