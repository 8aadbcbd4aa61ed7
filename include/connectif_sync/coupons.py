"""Coupon refills: which Connectif coupon sets need codes, which ERP codes to send, and marking them used.

The ERP keeps a pool of codes per Connectif coupon set. A code leaves the pool (``status = used``) only once
Connectif has confirmed its import, so an import that fails or a row that Connectif rejects never burns a
code silently: confirmed codes are marked used, rejected ones stay ``unused`` and are reported (and their
ids are skipped by the next selection when the caller passes them in ``exclude_ids``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

ACTIVE_WORKFLOW = "active"


@dataclass(frozen=True)
class CouponPoolTable:
    """Where the ERP keeps its codes; the defaults are the sample ERP's ``coupon_pool``."""

    table: str = "coupon_pool"
    schema: str | None = None
    id_column: str = "id"
    set_column: str = "coupon_set_id"
    code_column: str = "code"
    status_column: str = "status"
    used_at_column: str = "used_at"
    unused_value: str = "unused"
    used_value: str = "used"

    def sa_table(self) -> sa.TableClause:
        return sa.table(
            self.table,
            sa.column(self.id_column),
            sa.column(self.set_column),
            sa.column(self.code_column),
            sa.column(self.status_column),
            sa.column(self.used_at_column, sa.DateTime),
            schema=self.schema,
        )


@dataclass(frozen=True)
class CouponNeed:
    """A ``multiple`` coupon set used by an active workflow whose available codes fell below the threshold."""

    coupon_set_id: str
    name: str
    available: int
    wanted: int
    workflows: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PoolCode:
    """One unused code of the ERP pool."""

    id: int
    code: str | None


def choose_coupon_sets(
    coupon_sets: Iterable[Mapping[str, Any]],
    workflow_status: Callable[[str], str | None],
    *,
    threshold: int,
    refill_to: int,
) -> list[CouponNeed]:
    """Pick the sets to refill and how many codes each needs to get back to ``refill_to``.

    Only ``multiple`` sets qualify (a ``single`` set has one shared code), and only when at least one
    workflow using the set is ``active``. ``workflow_status`` returns a workflow's status (``None`` if the
    workflow no longer exists). ``available`` lags by ~10 s in Connectif; a refill that overshoots by a few
    codes is harmless, one that is missed leaves customers without coupons, so the threshold is strict.
    """
    if threshold < 0 or refill_to <= threshold:
        raise ValueError(f"need 0 <= threshold < refill_to, got threshold={threshold}, refill_to={refill_to}")
    needs = []
    for cs in coupon_sets:
        if cs.get("type") != "multiple":
            continue
        available = int(cs.get("available") or 0)
        if available >= threshold:
            continue
        workflow_ids = [str(w["workflowId"]) for w in cs.get("usedInWorkflows") or [] if w.get("workflowId")]
        active = tuple(w for w in workflow_ids if workflow_status(w) == ACTIVE_WORKFLOW)
        if not active:
            continue
        needs.append(
            CouponNeed(
                coupon_set_id=str(cs["id"]),
                name=str(cs.get("name") or ""),
                available=available,
                wanted=refill_to - available,
                workflows=active,
            )
        )
    return needs


def take_unused_codes(
    engine: Engine,
    coupon_set_id: str,
    limit: int,
    *,
    pool: CouponPoolTable = CouponPoolTable(),
    exclude_ids: Sequence[int] = (),
) -> list[PoolCode]:
    """The oldest ``limit`` unused codes of a set (by id), skipping ``exclude_ids``. Reads only."""
    if limit <= 0:
        return []
    t = pool.sa_table()
    stmt = (
        sa.select(t.c[pool.id_column], t.c[pool.code_column])
        .where(t.c[pool.set_column] == coupon_set_id, t.c[pool.status_column] == pool.unused_value)
        .order_by(t.c[pool.id_column])
        .limit(limit)
    )
    if exclude_ids:
        stmt = stmt.where(t.c[pool.id_column].not_in(list(exclude_ids)))
    with engine.connect() as conn:
        return [PoolCode(id=int(i), code=c) for i, c in conn.execute(stmt)]


def count_unused_codes(engine: Engine, *, pool: CouponPoolTable = CouponPoolTable()) -> dict[str, int]:
    """Unused codes per coupon set, for plans and reports."""
    t = pool.sa_table()
    stmt = (
        sa.select(t.c[pool.set_column], sa.func.count())
        .where(t.c[pool.status_column] == pool.unused_value)
        .group_by(t.c[pool.set_column])
    )
    with engine.connect() as conn:
        return {str(s): int(n) for s, n in conn.execute(stmt)}


def mark_codes_used(
    engine: Engine,
    coupon_set_id: str,
    ids: Iterable[int],
    *,
    when: datetime | None = None,
    pool: CouponPoolTable = CouponPoolTable(),
    batch: int = 500,
) -> int:
    """Mark the confirmed codes (by pool id) used; returns how many rows changed.

    Only ``unused`` rows of that set change, so calling it again for the same ids (a retried task) changes
    nothing and keeps the first ``used_at``.
    """
    stamp = (when or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    id_list = sorted(set(ids))
    t = pool.sa_table()
    changed = 0
    with engine.begin() as conn:
        for start in range(0, len(id_list), batch):
            part = id_list[start : start + batch]
            result = conn.execute(
                sa.update(t)
                .where(
                    t.c[pool.id_column].in_(part),
                    t.c[pool.set_column] == coupon_set_id,
                    t.c[pool.status_column] == pool.unused_value,
                )
                .values({pool.status_column: pool.used_value, pool.used_at_column: stamp})
            )
            changed += result.rowcount or 0
    return changed
