"""The store's connection: the engine, read-only mode, and the bulk read into Arrow every job shares.

Why a module of its own: each job of the store is a mixin of :class:`StoreBase` (one class per job, one file
each), and :class:`~connectif_sync.store.StateStore` combines them into the one facade callers use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import pyarrow as pa
import sqlalchemy as sa

from connectif_sync.extract import adbc_connect, adbc_uri
from connectif_sync.store.schema import (
    DEFAULT_STATE_URL,
    _create_tables,
    _sqlite_pragmas,
    state_blocks_table,
    state_table,
)


class StoreBase:
    """What every job of the store shares: the engine on ``url`` (tables created and migrated on opening).

    ``readonly=True`` never creates or changes anything (used by dry runs): a missing store reads as empty.
    """

    def __init__(self, url: str | None = None, *, readonly: bool = False) -> None:
        self.url = url or DEFAULT_STATE_URL
        self.readonly = readonly
        u = sa.make_url(self.url)
        self.in_memory = u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")
        """An in-memory SQLite store: each thread that connects gets a database of its own, so no other
        thread may write to it for the run (see :class:`connectif_sync.rejects.Rejects`)."""
        self._missing = (
            readonly and u.get_backend_name() == "sqlite" and not self.in_memory and not Path(str(u.database)).exists()
        )
        self.engine = sa.create_engine(self.url)
        self._adbc = u.get_backend_name() == "postgresql" and adbc_uri(self.url) is not None
        if u.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._no_blocks = False  # a store from before the blocks, opened read-only: reads skip them
        if not readonly:
            _create_tables(self.engine)
        elif not self._missing:
            inspector = sa.inspect(self.engine)
            self._missing = not inspector.has_table(state_table.name)
            self._no_blocks = not inspector.has_table(state_blocks_table.name)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> None:
        if self.readonly:
            raise RuntimeError("this state store was opened read-only (dry run)")

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
