"""Dry runs of any object, bulk or purchases.

Above both :mod:`connectif_sync.pipeline` (bulk objects) and :mod:`connectif_sync.purchases` (which builds on
the pipeline's report), so that neither imports the other back.
"""

from __future__ import annotations

from typing import Any

from connectif_sync.pipeline import run_sync
from connectif_sync.purchases import plan_purchases
from connectif_sync.report import SyncReport


def plan_sync(obj: str, source_url: str, **kwargs: Any) -> SyncReport:
    """What a sync would send (counts, files, bytes, API requests) without writing anything anywhere."""
    if obj == "purchases":
        return plan_purchases(source_url, **kwargs)
    return run_sync(obj, source_url, None, dry_run=True, **kwargs).report
