"""Coupon refills: which Connectif coupon sets need codes, which ERP codes to send, and marking them used.

The ERP keeps a pool of codes per Connectif coupon set. A code leaves the pool (``status = used``) only once
Connectif has confirmed its import, so an import that fails or a row that Connectif rejects never burns a
code silently: confirmed codes are marked used, rejected ones stay ``unused`` and are reported.

A run is :func:`plan_refill` (choose the sets, take the pool's oldest unused codes, validate and write one
CSV per set) then, once Connectif answered, :func:`confirm_refill` (mark the confirmed codes used, build the
run's :class:`~connectif_sync.contract.RunSummary`). Pool ids travel as integers from the ERP to the
confirmation: the codes our validation refused are kept by id in the state store table
``connectif_sync_coupon_refused`` and skipped by the next selections (they would otherwise be picked first
again, every run, and starve the set).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connectif_sync.contract import ImportOutcome, RunState, RunSummary, SyncObject
from connectif_sync.import_rejects import record_import_rejects, with_keys
from connectif_sync.mappings import Mapping as SyncMapping
from connectif_sync.pipeline import run_sync
from connectif_sync.store import StateStore

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


#: Pool codes our validation refused (empty, too long, repeated), by pool id: never picked again.
refused_table = sa.Table(
    "connectif_sync_coupon_refused",
    sa.MetaData(),
    sa.Column("pool_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("coupon_set_id", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
)


def refused_ids(state_url: str) -> list[int]:
    """Pool ids refused by earlier runs (see :data:`refused_table`)."""
    engine = sa.create_engine(state_url)
    try:
        refused_table.create(engine, checkfirst=True)
        with engine.connect() as conn:
            return [int(i) for (i,) in conn.execute(sa.select(refused_table.c.pool_id))]
    finally:
        engine.dispose()


def record_refused(state_url: str, refused: Mapping[str, Sequence[int]], run_id: str | None) -> int:
    """Remember the pool ids (per coupon set) this run refused; returns how many were new."""
    rows = [{"pool_id": int(i), "coupon_set_id": s, "run_id": run_id} for s, ids in refused.items() for i in ids]
    if not rows:
        return 0
    engine = sa.create_engine(state_url)
    try:
        refused_table.create(engine, checkfirst=True)
        with engine.begin() as conn:
            known = {
                int(i)
                for (i,) in conn.execute(
                    sa.select(refused_table.c.pool_id).where(refused_table.c.pool_id.in_([r["pool_id"] for r in rows]))
                )
            }
            new = [
                {**r, "recorded_at": datetime.now(UTC).replace(tzinfo=None)} for r in rows if r["pool_id"] not in known
            ]
            if new:
                conn.execute(refused_table.insert(), new)
        return len(new)
    finally:
        engine.dispose()


def only_pool_ids(mapping: SyncMapping, ids: Sequence[int], dialect: sa.Dialect) -> SyncMapping:
    """The coupons mapping restricted to the pool rows ``ids`` (its order column), as SQL built by SQLAlchemy.

    The mapping's own SELECT (or table) becomes a subquery; the ids are rendered as integer literals by the
    dialect (a named-parameter copy of it, so a ``%`` in the mapping's SQL is not doubled).
    """
    if not mapping.order_by:
        raise ValueError(f"{mapping.path}: the coupons mapping needs order_by with the pool's id column first")
    cols: list[sa.ColumnClause[Any]] = [sa.column(c) for c in mapping.source_columns()]
    source: Any
    if mapping.table is not None:
        schema, _, name = mapping.table.rpartition(".")
        source = sa.table(name, *cols, schema=schema or None)
    else:
        source = sa.text(mapping.sql_for(dialect.name) or "").columns(*cols).subquery("pool")
    stmt = sa.select(*source.c).where(source.c[mapping.order_by[0]].in_(sorted(int(i) for i in ids)))
    named = type(dialect)(paramstyle="named")  # type: ignore[call-arg]  # every concrete dialect takes it
    sql = str(stmt.compile(dialect=named, compile_kwargs={"literal_binds": True}))
    return dataclasses.replace(mapping, table=None, sql=sql, sql_variants={})


@dataclass
class RefillFile:
    """One CSV of codes for one coupon set's import; ``codes`` maps each code to the pool id it came from."""

    file_path: str
    coupon_set_id: str
    codes: dict[str, int]

    def import_kwargs(self) -> dict[str, Any]:
        return {"file_path": self.file_path, "coupon_set_id": self.coupon_set_id}


@dataclass
class RefillPlan:
    """What one coupons run sends: the sets to refill, their files, and what the pool could not give."""

    dry_run: bool
    needs: list[CouponNeed]
    files: list[RefillFile] = field(default_factory=list)
    to_send: dict[str, int] = field(default_factory=dict)  # set -> codes the run sends (or would send)
    short: dict[str, int] = field(default_factory=dict)  # set -> codes wanted that the pool does not have
    refused_now: dict[str, list[int]] = field(default_factory=dict)
    refused_earlier: int = 0
    report: dict[str, Any] = field(default_factory=dict)  # the sync library's report (SyncReport.as_dict)
    rejected: list[str] = field(default_factory=list)  # a sample, for the notes

    @property
    def total(self) -> int:
        return sum(self.to_send.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RefillPlan:
        return cls(
            **{
                **data,
                "needs": [CouponNeed(**{**n, "workflows": tuple(n["workflows"])}) for n in data["needs"]],
                "files": [RefillFile(**f) for f in data.get("files") or []],
            }
        )


def _codes_of(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["code"] for row in csv.DictReader(fh)]


def plan_refill(
    coupon_sets: Iterable[Mapping[str, Any]],
    workflow_status: Callable[[str], str | None],
    *,
    source_url: str,
    state_url: str,
    mapping: SyncMapping,
    threshold: int,
    refill_to: int,
    out_dir: str | Path | None,
    dry_run: bool = False,
    run_id: str | None = None,
    pool: CouponPoolTable = CouponPoolTable(),
) -> RefillPlan:
    """Choose the sets to refill, take their codes and write one CSV per set (``out_dir``; none when dry).

    Codes the mapping refuses go to the rejected store (with their reasons) and, by pool id, to
    :data:`refused_table`; a dry run records nothing.
    """
    plan = RefillPlan(
        dry_run, choose_coupon_sets(coupon_sets, workflow_status, threshold=threshold, refill_to=refill_to)
    )
    refused = refused_ids(state_url)
    plan.refused_earlier = len(refused)
    engine = sa.create_engine(source_url)
    try:
        taken = {
            n.coupon_set_id: take_unused_codes(engine, n.coupon_set_id, n.wanted, pool=pool, exclude_ids=refused)
            for n in plan.needs
        }
        dialect = engine.dialect
    finally:
        engine.dispose()
    plan.short = {
        n.coupon_set_id: n.wanted - len(taken[n.coupon_set_id])
        for n in plan.needs
        if len(taken[n.coupon_set_id]) < n.wanted
    }
    ids = [c.id for codes in taken.values() for c in codes]
    if not ids:
        return plan
    result = run_sync(
        "coupons",
        source_url,
        None if dry_run else out_dir,
        state_url=state_url,
        mapping=only_pool_ids(mapping, ids, dialect),
        dry_run=dry_run,
        run_id=run_id,
    )
    plan.report = result.report.as_dict()
    plan.rejected = [f"{r['source_ref']}: {r['field']} {r['reason']}" for r in result.rejected[:20]]
    first_id: dict[str, dict[str, int]] = {}  # set -> code -> pool id of its first row (the one sent)
    for set_id, codes in taken.items():
        for c in codes:
            if c.code is not None:
                first_id.setdefault(set_id, {}).setdefault(str(c.code), c.id)
    if dry_run:  # the files are planned, not written: counts only
        for f in result.files:
            plan.to_send[str(f.partition)] = plan.to_send.get(str(f.partition), 0) + f.rows
        return plan
    sent_ids: dict[str, set[int]] = {}
    for f in result.files:
        set_id = str(f.partition)
        by_code = first_id.get(set_id, {})
        in_file = {c: by_code[c] for c in _codes_of(f.path) if c in by_code}
        plan.files.append(RefillFile(f.path, set_id, in_file))
        plan.to_send[set_id] = plan.to_send.get(set_id, 0) + len(in_file)
        sent_ids.setdefault(set_id, set()).update(in_file.values())
    plan.refused_now = {
        s: sorted(c.id for c in codes if c.id not in sent_ids.get(s, set())) for s, codes in taken.items()
    }
    plan.refused_now = {s: i for s, i in plan.refused_now.items() if i}
    record_refused(state_url, plan.refused_now, run_id)
    return plan


@dataclass
class RefillOutcome:
    """A confirmed coupons run: its summary, and why the run must fail (None when it must not)."""

    summary: RunSummary
    failure: str | None = None


def _refill_summary(plan: RefillPlan, dag_id: str, run_id: str) -> RunSummary:
    """The run summary of a refill as planned, before anything is confirmed."""
    rep = plan.report
    summary = RunSummary(
        dag_id=dag_id,
        run_id=run_id,
        object=SyncObject.COUPONS,
        dry_run=plan.dry_run,
        state=RunState.PLANNED if plan.dry_run else RunState.SUCCESS,
        library_run_id=rep.get("run_id"),
        api_requests=rep.get("api_requests"),
        plan=rep.get("api_requests") if plan.dry_run else None,
        rejected_by_reason=dict(rep.get("rejected_by_reason") or {}),
        notes=[f"refill {n.coupon_set_id} ({n.name}): {n.available} available, wants {n.wanted}" for n in plan.needs],
        extra={
            "sets_refilled": len(plan.needs),
            "marked_used": {},
            "refused_earlier": plan.refused_earlier,
        },
    )
    if plan.needs:  # a run with no set to refill says nothing about the pool (its alert keeps its state)
        summary.extra["pool_short"] = dict(plan.short)
    for name in ("extracted", "unchanged", "invalid", "duplicate"):
        setattr(summary, name, int(rep.get(name) or 0))
    summary.to_send = plan.total
    summary.notes += plan.rejected
    summary.notes += [f"{s}: the ERP pool lacks {n} codes to reach refill_to" for s, n in plan.short.items()]
    return summary


def _mark_confirmed(
    summary: RunSummary,
    results: Sequence[Mapping[str, Any]],
    by_path: Mapping[str, Any],
    *,
    source_url: str,
    state_url: str,
    pool: CouponPoolTable,
) -> int:
    """Mark used the codes of each import Connectif confirmed; the number of imports without proof."""
    unconfirmed = 0
    used: dict[str, int] = summary.extra["marked_used"]
    engine = sa.create_engine(source_url)
    try:
        with StateStore(state_url) as store:
            for plain in results:
                s = with_keys(plain)  # the code of each line Connectif rejected, while the files exist
                summary.add_import(ImportOutcome.from_operator(s))
                if store.confirm_import(s).get("unconfirmed"):  # no proof of which codes arrived
                    unconfirmed += 1
                    summary.notes.append(
                        f"{s['file_path']}: import {s['import_id']} has no complete error "
                        "report; its codes stay unused in the ERP and go again next run"
                    )
                    continue
                record_import_rejects(store, "coupons", summary.library_run_id, s)
                file = by_path[str(s["file_path"])]
                failed = {int(r["line"]) for r in s.get("rejected_rows") or []}
                summary.rejected_by_connectif += len(failed)
                ok = [
                    file.codes[c]
                    for n, c in enumerate(_codes_of(file.file_path), start=1)
                    if n not in failed and c in file.codes
                ]
                used[file.coupon_set_id] = used.get(file.coupon_set_id, 0) + mark_codes_used(
                    engine, file.coupon_set_id, ok, pool=pool
                )
                summary.notes += [
                    f"{file.coupon_set_id} line {r['line']}: {r['error']}" for r in (s.get("rejected_rows") or [])[:5]
                ]
    finally:
        engine.dispose()
    return unconfirmed


def confirm_refill(
    plan: RefillPlan,
    results: Sequence[Mapping[str, Any]],
    *,
    source_url: str,
    state_url: str,
    dag_id: str,
    run_id: str,
    held: str | None = None,
    pool: CouponPoolTable = CouponPoolTable(),
) -> RefillOutcome:
    """Mark used the codes Connectif confirmed (``results``: what the import tasks returned) and summarise.

    ``held``: how a guardrail hold ended when it did not release the files (``rejected``, ``timed out
    (rejected)``): nothing was imported and nothing is marked. An import whose answer does not prove which
    codes arrived (no complete error report) marks nothing: its
    codes stay unused in the ERP and go again next run, and the run fails so that someone looks.
    """
    summary = _refill_summary(plan, dag_id, run_id)
    released = [] if held else plan.files
    if held:
        summary.notes.append(f"guardrail held the run; upload {held}: nothing was sent")
    unconfirmed = 0
    if not plan.dry_run and results:
        by_path = {f.file_path: f for f in released}
        unconfirmed = _mark_confirmed(summary, results, by_path, source_url=source_url, state_url=state_url, pool=pool)
    summary.sent = sum(summary.extra["marked_used"].values())
    summary.rejected = summary.invalid + summary.duplicate + summary.rejected_by_connectif
    summary.extra["import_errors"] = len(released) - len(results) if not plan.dry_run else 0
    failure = None
    if unconfirmed:
        failure = (
            f"{unconfirmed} coupon imports finished without a complete error report: their codes stay "
            "unused in the ERP and are picked again by the next run"
        )
    elif not plan.dry_run and len(results) < len(released):
        failure = (
            f"{len(released) - len(results)} of {len(released)} coupon imports did not finish; their "
            "codes stay unused in the ERP and are picked again by the next run"
        )
    if failure:
        summary.state = RunState.INCOMPLETE
    return RefillOutcome(summary, failure)
