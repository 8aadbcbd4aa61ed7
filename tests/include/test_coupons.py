"""Coupon refills: set selection, taking unused ERP codes, marking confirmed ones used (idempotently)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectif_sync.coupons import (
    CouponNeed,
    CouponPoolTable,
    choose_coupon_sets,
    count_unused_codes,
    mark_codes_used,
    take_unused_codes,
)

SET_A = "a" * 24
SET_B = "b" * 24


@pytest.fixture
def erp(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'erp.sqlite'}")
    meta = sa.MetaData()
    pool = sa.Table(
        "coupon_pool",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("coupon_set_id", sa.String(24), nullable=False),
        sa.Column("code", sa.String(100)),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime),
    )
    meta.create_all(engine)
    created = datetime(2026, 1, 1)
    rows: list[dict[str, Any]] = [
        {"id": 1, "coupon_set_id": SET_A, "code": "A1", "status": "used", "created_at": created, "used_at": created},
        {"id": 2, "coupon_set_id": SET_A, "code": "A2", "status": "unused", "created_at": created, "used_at": None},
        {"id": 3, "coupon_set_id": SET_B, "code": "B1", "status": "unused", "created_at": created, "used_at": None},
        {"id": 4, "coupon_set_id": SET_A, "code": None, "status": "unused", "created_at": created, "used_at": None},
        {"id": 5, "coupon_set_id": SET_A, "code": "A3", "status": "unused", "created_at": created, "used_at": None},
    ]
    with engine.begin() as conn:
        conn.execute(pool.insert(), rows)
    yield engine
    engine.dispose()


def status(engine: sa.Engine) -> dict[int, tuple[str, str | None]]:
    with engine.connect() as conn:
        return {i: (s, u) for i, s, u in conn.execute(sa.text("SELECT id, status, used_at FROM coupon_pool"))}


def coupon_set(id_: str, kind: str, available: int, workflows: list[str]) -> dict[str, Any]:
    return {
        "id": id_,
        "name": f"set {id_[:3]}",
        "type": kind,
        "available": available,
        "assigned": 0,
        "usedInWorkflows": [{"workflowId": w} for w in workflows],
    }


def test_only_multiple_sets_of_active_workflows_below_threshold_are_chosen() -> None:
    sets = [
        coupon_set("1" * 24, "multiple", 3, ["w-active"]),
        coupon_set("2" * 24, "multiple", 3, ["w-draft", "w-gone"]),
        coupon_set("3" * 24, "single", 0, ["w-active"]),
        coupon_set("4" * 24, "multiple", 10, ["w-active"]),  # at the threshold: enough
        coupon_set("5" * 24, "multiple", 0, []),
        {**coupon_set("6" * 24, "multiple", 0, ["w-draft", "w-active"]), "available": None},
    ]
    statuses = {"w-active": "active", "w-draft": "draft"}

    needs = choose_coupon_sets(sets, statuses.get, threshold=10, refill_to=50)

    assert needs == [
        CouponNeed("1" * 24, "set 111", 3, 47, ("w-active",)),
        CouponNeed("6" * 24, "set 666", 0, 50, ("w-active",)),
    ]


def test_threshold_must_be_below_refill_target() -> None:
    with pytest.raises(ValueError, match="threshold < refill_to"):
        choose_coupon_sets([], lambda _: "active", threshold=10, refill_to=10)


def test_take_unused_codes_of_one_set_oldest_first(erp: sa.Engine) -> None:
    assert [(c.id, c.code) for c in take_unused_codes(erp, SET_A, 10)] == [(2, "A2"), (4, None), (5, "A3")]
    assert [c.id for c in take_unused_codes(erp, SET_A, 1)] == [2]
    assert [c.id for c in take_unused_codes(erp, SET_A, 10, exclude_ids=[2, 4])] == [5]
    assert take_unused_codes(erp, SET_A, 0) == []
    assert count_unused_codes(erp) == {SET_A: 3, SET_B: 1}


def test_mark_used_changes_only_unused_rows_of_that_set_and_is_idempotent(erp: sa.Engine) -> None:
    first = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)

    assert mark_codes_used(erp, SET_A, [2, 5, 3, 1], when=first) == 2  # 3 is set B, 1 already used
    assert mark_codes_used(erp, SET_A, [2, 5], when=datetime(2026, 3, 1, tzinfo=UTC)) == 0

    got = status(erp)
    assert got[2][0] == got[5][0] == "used"
    assert str(got[2][1]).startswith("2026-02-01 10:00:00")
    assert got[3] == ("unused", None)
    assert got[4] == ("unused", None)
    assert count_unused_codes(erp) == {SET_A: 1, SET_B: 1}


def test_pool_table_and_column_names_are_configurable(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'custom.sqlite'}")
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE vouchers (vid INTEGER, campaign TEXT, voucher TEXT, state TEXT, sent TIMESTAMP)")
        )
        conn.execute(sa.text("INSERT INTO vouchers VALUES (7, 'S', 'V7', 'free', NULL), (8, 'S', 'V8', 'gone', NULL)"))
    pool = CouponPoolTable(
        table="vouchers",
        id_column="vid",
        set_column="campaign",
        code_column="voucher",
        status_column="state",
        used_at_column="sent",
        unused_value="free",
        used_value="gone",
    )
    assert [(c.id, c.code) for c in take_unused_codes(engine, "S", 5, pool=pool)] == [(7, "V7")]
    assert mark_codes_used(engine, "S", [7], pool=pool) == 1
    assert take_unused_codes(engine, "S", 5, pool=pool) == []
    engine.dispose()


def test_only_pool_ids_wraps_the_mapping_sql_without_doubling_percent_signs() -> None:
    from sqlalchemy.dialects import mysql, postgresql

    from connectif_sync.coupons import only_pool_ids
    from connectif_sync.mappings import resolve_mapping

    mapping = dataclasses.replace(
        resolve_mapping("coupons"), sql="SELECT id, coupon_set_id, code FROM coupon_pool WHERE code LIKE 'A%'"
    )
    for dialect in (postgresql.psycopg2.dialect(), mysql.pymysql.dialect()):
        sql = only_pool_ids(mapping, [5, 2], dialect).sql or ""
        assert "LIKE 'A%'" in sql and "%%" not in sql, sql
        assert sql.rstrip().endswith("IN (2, 5)"), sql
    with pytest.raises(ValueError, match="order_by"):
        only_pool_ids(dataclasses.replace(mapping, order_by=()), [1], postgresql.psycopg2.dialect())


def test_plan_and_confirm_a_refill_without_airflow(erp: sa.Engine, tmp_path: Path) -> None:
    """Refused codes are kept by pool id and never picked again; only codes Connectif confirmed are marked."""
    from connectif_sync.coupons import RefillPlan, confirm_refill, plan_refill, refused_ids
    from connectif_sync.mappings import resolve_mapping

    erp_url, state_url = str(erp.url), f"sqlite:///{tmp_path / 'state.sqlite'}"
    sets = [coupon_set(SET_A, "multiple", 0, ["w1"]), coupon_set(SET_B, "multiple", 50, ["w1"])]
    common: dict[str, Any] = {"source_url": erp_url, "state_url": state_url, "mapping": resolve_mapping("coupons"),
                              "threshold": 10, "refill_to": 20}  # fmt: skip

    dry = plan_refill(sets, lambda _: "active", out_dir=None, dry_run=True, **common)
    assert dry.to_send == {SET_A: 2} and dry.files == [] and refused_ids(state_url) == []
    assert dry.short == {SET_A: 17}  # wants 20, the pool has 3 unused codes

    plan = plan_refill(sets, lambda _: "active", out_dir=tmp_path / "run", run_id="r1", **common)
    assert [(f.coupon_set_id, f.codes) for f in plan.files] == [(SET_A, {"A2": 2, "A3": 5})]
    assert plan.refused_now == {SET_A: [4]} and refused_ids(state_url) == [4]  # the code-less row
    assert RefillPlan.from_dict(plan.as_dict()) == plan  # through XCom and back
    answer = {"file_path": plan.files[0].file_path, "import_id": "i1", "status": "finished", "total": 2,
              "success": 1, "errors": 1, "rejected_rows": [{"line": 1, "field": "code", "error": "taken"}]}  # fmt: skip

    outcome = confirm_refill(plan, [answer], source_url=erp_url, state_url=state_url, dag_id="d", run_id="r1")

    assert outcome.failure is None
    assert outcome.summary.sent == 1 and outcome.summary.rejected_by_connectif == 1
    assert outcome.summary.extra["marked_used"] == {SET_A: 1} and outcome.summary.extra["pool_short"] == {SET_A: 17}
    assert status(erp)[5][0] == "used" and status(erp)[2][0] == "unused"  # line 1 (A2) was refused by Connectif
    again = plan_refill(sets, lambda _: "active", out_dir=tmp_path / "run2", run_id="r2", **common)
    assert again.refused_earlier == 1 and all(4 not in f.codes.values() for f in again.files)


def test_a_held_refill_marks_nothing_and_an_unproven_import_fails_the_run(erp: sa.Engine, tmp_path: Path) -> None:
    from connectif_sync.coupons import confirm_refill, plan_refill
    from connectif_sync.mappings import resolve_mapping

    erp_url, state_url = str(erp.url), f"sqlite:///{tmp_path / 'state.sqlite'}"
    plan = plan_refill([coupon_set(SET_A, "multiple", 0, ["w1"])], lambda _: "active", source_url=erp_url,
                       state_url=state_url, mapping=resolve_mapping("coupons"), threshold=10, refill_to=20,
                       out_dir=tmp_path / "run", run_id="r1")  # fmt: skip
    before = status(erp)
    held = confirm_refill(plan, [], source_url=erp_url, state_url=state_url, dag_id="d", run_id="r", held="rejected")
    assert held.failure is None and held.summary.sent == 0 and status(erp) == before
    assert any("upload rejected: nothing was sent" in n for n in held.summary.notes)
    unfinished = confirm_refill(plan, [], source_url=erp_url, state_url=state_url, dag_id="d", run_id="r")
    assert unfinished.failure is not None and "1 of 1 coupon imports did not finish" in unfinished.failure
    assert status(erp) == before
