"""Confirmed rows stored append-only, a block at a time: encoding, reading and merging blocks.

Why: committing a run's confirmed rows one row at a time (an upsert per key into a B-tree keyed by text) cost
2.4-5x the run's extract (bench/README.md). A confirmation now appends its rows as a few blocks (an Arrow IPC
file of up to :data:`BLOCK_ROWS` rows each, one table row per block) in one transaction, and readers overlay
the blocks in order: a later block's row replaces an earlier row with the same key hash, and any block
replaces the rows of ``connectif_sync_state`` (written by earlier versions). Repeating a confirmation appends
the same rows again, which changes nothing a reader sees: retries stay idempotent. When an object's blocks
hold many superseded rows they are compacted into fresh blocks (:func:`latest`), so storage stays
proportional to the confirmed keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import sqlalchemy as sa

from connectif_sync.hashing import merge_latest, stable_argsort
from connectif_sync.store.schema import state_blocks_table

BLOCK_ROWS = 100_000
"""Rows per block: a block of a million-row commit stays a few MB (MySQL's packet limit is 16 MB by default)."""

COMPACT_BLOCKS = 32
"""An object whose blocks outnumber this is compacted (also when they hold over twice its keys, on SQLite)."""

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("key_hash", pa.int64()),
        ("row_hash", pa.int64()),
        ("source_hash", pa.int64()),
        ("empty_mask", pa.int64()),
    ]
)
"""The columns of a block: those of ``connectif_sync_state`` but the object, the time (one per block) and the
source's ``updated_at``, which no reader needs (a quarter of a block's bytes; blocks written before it was
dropped still hold it, and readers ask for columns by name)."""

HASHES = ("key_hash", "row_hash", "source_hash")

#: Uncompressed: zstd (lz4) made a commit 25x (8x) slower than writing the bytes, for a block 2.1x (1.7x)
#: smaller (measured on 300,000 contacts); the commit's time is what matters.
_WRITE = ipc.IpcWriteOptions(compression=None, use_threads=False)


def from_manifest(rows: pa.Table) -> pa.Table:
    """The block columns of a chunk manifest's rows (manifests of older versions lack some: NULL)."""

    def column(name: str, source: str) -> pa.ChunkedArray | pa.Array:
        if source in rows.column_names:
            return rows.column(source).cast(SCHEMA.field(name).type)
        return pa.nulls(rows.num_rows, SCHEMA.field(name).type)

    return pa.table({f.name: column(f.name, f.name) for f in SCHEMA})


def encode(table: pa.Table) -> pa.Buffer:
    """One block: an Arrow IPC file, so that readers can read only the columns they need. Written into a
    buffer of its exact size (measured first), so that no byte is copied twice."""
    table = table if table.schema.equals(SCHEMA) else table.select(SCHEMA.names).cast(SCHEMA)
    size = pa.MockOutputStream()
    with ipc.new_file(size, SCHEMA, options=_WRITE) as writer:
        writer.write_table(table)
    buffer = pa.allocate_buffer(size.size())
    with ipc.new_file(pa.FixedSizeBufferWriter(buffer), SCHEMA, options=_WRITE) as writer:
        writer.write_table(table)
    return buffer


def decode(data: bytes, columns: Sequence[str]) -> pa.Table:
    """The ``columns`` of one block (by name: blocks of earlier versions have one column more)."""
    buffer = pa.py_buffer(data)
    schema = ipc.open_file(buffer).schema
    fields = [schema.get_field_index(c) for c in columns]
    table = ipc.open_file(buffer, options=ipc.IpcReadOptions(included_fields=fields)).read_all()
    return table.select(list(columns))


def append(conn: sa.Connection, obj: str, table: pa.Table, confirmed_at: object) -> int:
    """Append ``table`` (block columns) as blocks of ``obj``; returns how many blocks were written."""
    written = 0
    for off in range(0, table.num_rows, BLOCK_ROWS):
        part = table.slice(off, BLOCK_ROWS)
        conn.execute(
            state_blocks_table.insert().values(
                object=obj, rows=part.num_rows, data=_bindable(conn, encode(part)), confirmed_at=confirmed_at
            )
        )
        written += 1
    return written


def _bindable(conn: sa.Connection, buffer: pa.Buffer) -> bytes | memoryview:
    """The block for the driver: SQLite's binds any buffer (no copy); the others want bytes."""
    return memoryview(buffer) if conn.dialect.name == "sqlite" else buffer.to_pybytes()


def read(
    conn: sa.Connection, obj: str, columns: Sequence[str], key_hashes: np.ndarray | None = None
) -> Iterator[pa.Table]:
    """The blocks of ``obj`` in the order they were appended (``columns`` only; only the rows of
    ``key_hashes`` when given, which needs ``key_hash`` among ``columns``)."""
    wanted = pa.array(np.unique(key_hashes), pa.int64()) if key_hashes is not None else None
    t = state_blocks_table
    seqs = [r[0] for r in conn.execute(sa.select(t.c.seq).where(t.c.object == obj).order_by(t.c.seq))]
    for seq in seqs:  # one block in memory at a time
        data = conn.execute(sa.select(t.c.data).where(t.c.seq == seq)).scalar_one()
        block = decode(data, columns)
        if wanted is not None:
            block = block.filter(pc.is_in(block.column("key_hash"), value_set=wanted))
        yield block


def sizes(conn: sa.Connection, obj: str) -> tuple[int, int]:
    """``(blocks, rows in them)`` of ``obj``."""
    t = state_blocks_table
    n, rows = conn.execute(sa.select(sa.func.count(), sa.func.sum(t.c.rows)).where(t.c.object == obj)).one()
    return int(n or 0), int(rows or 0)


def latest(layers: Sequence[pa.Table], columns: Sequence[str]) -> pa.Table:
    """The rows of ``layers`` (oldest first, each with ``columns`` of the block schema), one per key hash, the
    latest one; sorted by key hash."""
    schema = pa.schema([SCHEMA.field(c) for c in columns])
    table = pa.concat_tables([SCHEMA.empty_table().select(list(columns))] + [t.cast(schema) for t in layers])
    table = table.combine_chunks()
    key_hashes = np.asarray(table.column("key_hash").to_numpy(), dtype=np.int64)
    return table.take(pa.array(_latest_positions(key_hashes)))


def latest_hashes(layers: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`latest` for ``(n, 3)`` arrays of (key hash, row hash, source hash).

    When the oldest layer is already sorted by key hash with each key once (a snapshot: a confirmation adds a
    file's rows to it), only the newer layers are sorted, and the two sorted runs are merged (the commit of a
    million-row first run's two files: 0.55-0.79 -> 0.48-0.49 s, bench/README.md, session 10)."""
    present = [a for a in layers if len(a)]
    if not present:
        return np.empty((0, 3), np.int64)
    if len(present) > 1 and _sorted_unique(present[0][:, 0]):
        newer = present[1] if len(present) == 2 else np.concatenate(present[1:])
        return _merge_latest(present[0], newer, _latest_positions(newer[:, 0]))
    stacked = present[0] if len(present) == 1 else np.concatenate(present)
    return stacked[_latest_positions(stacked[:, 0])]


def _sorted_unique(keys: np.ndarray) -> bool:
    return len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1]))


def _merge_latest(older: np.ndarray, newer: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The union of ``older`` (sorted by key hash, each key once) and the rows ``at`` of ``newer`` (the same
    order), ``newer``'s row where both have a key.

    In C (``hashing.merge_latest``), one pass into the result. Without it: a stable sort of the two runs of
    keys is a merge (timsort finds the runs) and puts ``older``'s row of a key first; the rows are then taken
    from where they are, not from a copy of both (24 bytes a row less at the commit's peak)."""
    if merge_latest is not None and older.shape[1:] == newer.shape[1:] == (3,):
        out = np.empty((len(older) + len(at), 3), np.int64)
        rows = merge_latest(
            np.ascontiguousarray(older, np.int64), np.ascontiguousarray(newer, np.int64),
            np.ascontiguousarray(at, np.int64), out,
        )  # fmt: skip
        return out[:rows]
    keys = np.concatenate([older[:, 0], newer[at, 0]])
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    last = np.ones(len(keys), bool)
    last[:-1] = keys[1:] != keys[:-1]
    del keys
    order = order[last]
    from_older = order < len(older)
    out = np.empty((len(order), 3), np.int64)
    out[from_older] = older[order[from_older]]
    out[~from_older] = newer[at[order[~from_older] - len(older)]]
    return out


def hashes_of(table: pa.Table) -> np.ndarray:
    """A block's (key hash, row hash, source hash or 0) as an ``(n, 3)`` int64 array."""
    if table.num_rows == 0:
        return np.empty((0, 3), np.int64)
    return np.stack([_int64(table.column(c)) for c in HASHES], axis=1)


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    """An int64 column as numpy, NULL as 0 (without ``pc.fill_null``, whose scalar imports pandas: 1-4 s)."""
    arr = column.combine_chunks()
    values = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr)]
    if arr.null_count == 0:
        return values
    return np.where(arr.is_valid().to_numpy(zero_copy_only=False), values, 0)


def pairs(table: pa.Table) -> Iterator[tuple[Any, Any]]:
    """The rows of a two-column table as pairs (to update a dict: later blocks replace earlier values)."""
    first, second = (table.column(i).to_pylist() for i in range(2))
    return zip(first, second, strict=True)


def _latest_positions(key_hashes: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of every key hash, in key-hash order."""
    order = stable_argsort(key_hashes)  # equal hashes stay in position order: the last of each is the latest
    ordered = key_hashes[order]
    last = np.ones(len(order), bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    return order if last.all() else order[last]
