"""The state store's former path, kept because code and configuration outside this package import it.

The store is the package :mod:`connectif_sync.store`, split by job; this module re-exports its names (and the
few internals the tests of earlier versions reach), so ``from connectif_sync.state import StateStore`` keeps
working. New code imports :mod:`connectif_sync.store`.
"""

from __future__ import annotations

from connectif_sync.store import *  # noqa: F403  (the alias is the whole public surface)
from connectif_sync.store import __all__ as _store_all
from connectif_sync.store.index import _HASHES_SQL, _read_snapshot, _sqlite_int_columns, _write_snapshot
from connectif_sync.store.schema import _create_tables, _migrate

__all__ = [*_store_all, "_HASHES_SQL", "_create_tables", "_migrate", "_read_snapshot", "_sqlite_int_columns",
           "_write_snapshot"]  # fmt: skip
