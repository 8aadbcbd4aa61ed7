"""One SQLAlchemy engine per source database URL, for the source's own queries: its columns, its key range,
its server's version, reads through SQLAlchemy.

Why a module of its own: the mappings check a source's columns and extraction reads its key range; both need
the engine, and extraction imports the mappings, so the engine cannot live in either without an import circle.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa


def source_engine(url: str | sa.URL) -> sa.Engine:
    """The process's engine for ``url``.

    One per URL: SQLAlchemy initialises an engine's dialect on its first connection (on MySQL/MariaDB a few
    queries, 0.02-0.03 s of each run's serial start when every query made an engine of its own). Its
    connections are not pooled (``NullPool``): none stays open between the queries or after a run."""
    return _engine(url if isinstance(url, str) else url.render_as_string(hide_password=False))


@functools.lru_cache(maxsize=16)
def _engine(url: str) -> sa.Engine:
    import sqlalchemy as sa  # here, not at import: the mappings import this module and need it for a check only

    return sa.create_engine(url, poolclass=sa.pool.NullPool)
