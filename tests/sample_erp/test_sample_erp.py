"""The sample ERP generator: deterministic, complete schema, dirty data at the requested rate."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync.cli import main


def _dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                for t in erp.TABLES
            }
    finally:
        engine.dispose()


def test_same_seed_same_rows_other_seed_other_rows(tmp_path: Path) -> None:
    a, b, c = (f"sqlite:///{tmp_path / n}.db" for n in "abc")
    sa_ = erp.generate(a, contacts=300, products=40, orders=50, coupons=30, seed=7)
    erp.generate(b, contacts=300, products=40, orders=50, coupons=30, seed=7)
    erp.generate(c, contacts=300, products=40, orders=50, coupons=30, seed=8)
    assert _dump(a) == _dump(b)
    assert _dump(a)["customers"] != _dump(c)["customers"]
    assert sa_.rows["customers"] == 300 and sa_.rows["products"] == 40 and sa_.rows["orders"] == 50
    assert sa_.rows["coupon_pool"] == 30 and sa_.rows["categories"] == len(erp.CATEGORY_TREE)


#: sha256 of a small ERP's rows and of its summary, as the generator wrote them when ``generate`` was split into
#: helpers (issue 13). The demo's, the benches' and the tests' data depend on these rows: they change only on
#: purpose (a new kind of dirt, a new column), and then these fingerprints are updated with the change.
ROWS_FINGERPRINT = "b0b62664ffae70eb618477dcfd5cb51204a9b6770ead0d07c7b3c509e48ab909"
SUMMARY_FINGERPRINT = "a693a9b69884a7780c08199cdb39b13ab1fc187daa416213d049ee5c89ce04be"


def test_the_rows_of_a_seed_do_not_change_by_accident(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    summary = erp.generate(url, contacts=300, products=40, orders=50, coupons=30, erasures=4, seed=7, dirty_rate=0.1)
    rows = {name: [list(map(repr, r)) for r in table] for name, table in _dump(url).items()}
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == ROWS_FINGERPRINT
    written = json.dumps(summary.as_dict(with_ids=True) | {"url": ""})  # dirty ids per kind, in the summary's order
    assert hashlib.sha256(written.encode()).hexdigest() == SUMMARY_FINGERPRINT


def test_regenerating_replaces_the_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=50, products=5, orders=5)
    erp.generate(url, contacts=20, products=5, orders=5)
    assert len(_dump(url)["customers"]) == 20


def test_dirty_rows_are_those_listed_in_the_summary(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    summary = erp.generate(url, contacts=2000, products=500, orders=10, coupons=400, seed=3, dirty_rate=0.1)
    rows = {r[0]: r for r in _dump(url)["customers"]}
    dirty = summary.dirty["customers"]
    assert all(dirty[k] for k in erp.CUSTOMER_DIRT), dirty  # every kind occurs at this rate
    total = sum(len(v) for v in dirty.values())
    assert 0.06 * 2000 < total < 0.14 * 2000
    assert all(i % 2 == 0 for v in dirty.values() for i in v)
    cols = [c.name for c in erp.customers.columns]
    email, first, last, points, phone = (
        cols.index(n) for n in ("email", "first_name", "last_name", "loyalty_points", "mobile_phone")
    )
    for i in dirty["null_email"]:
        assert rows[i][email] is None
    for i in dirty["duplicate_email"]:
        assert rows[i][email].strip().lower() == rows[i - 1][email]
        assert rows[i][email] != rows[i - 1][email]
    for i in dirty["invalid_email"]:
        assert rows[i][email] in erp.INVALID_EMAILS
    for i in dirty["long_name"]:
        assert rows[i][first] == "X" * 300
    for i in dirty["special_chars"]:
        assert rows[i][last] == erp.SPECIAL_LAST
    for i in dirty["unicode"]:
        assert rows[i][first] == erp.UNICODE_FIRST
    for i in dirty["leading_zeros"]:
        assert rows[i][points].startswith("000")
    for i in dirty["invalid_phone"]:
        assert rows[i][phone] == "12ab"
    clean = [r for i, r in rows.items() if not any(i in v for v in dirty.values())]
    assert all(r[email] == erp.clean_email(3, r[0]) for r in clean)
    assert all(not r[points].startswith("0") or r[points] == "0" for r in clean)
    products = {r[0]: r for r in _dump(url)["products"]}
    pcols = [c.name for c in erp.products.columns]
    price, name, url_col, sku = (pcols.index(n) for n in ("price", "name", "url", "sku"))
    pd_ = summary.dirty["products"]
    assert all(pd_[k] for k in erp.PRODUCT_DIRT), pd_
    for i in pd_["negative_price"]:
        assert products[i][price] < 0
    for i in pd_["null_price"]:
        assert products[i][price] is None
    for i in pd_["null_name"]:
        assert products[i][name] is None
    for i in pd_["duplicate_sku"]:
        assert products[i][sku] == products[i - 1][sku]
    assert all(r[url_col].startswith("https://shop.example.com/") for r in products.values())


def test_orders_reference_existing_rows_and_lie_in_the_window(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    erp.generate(url, contacts=100, products=20, orders=300, order_days=2, seed=1)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        orphans = conn.execute(
            sa.text(
                "SELECT count(*) FROM order_lines l LEFT JOIN products p ON p.id = l.product_id "
                "LEFT JOIN orders o ON o.id = l.order_id WHERE p.id IS NULL OR o.id IS NULL"
            )
        ).scalar()
        lo, hi = conn.execute(sa.text("SELECT min(ordered_at), max(ordered_at) FROM orders")).one()
        per_order = conn.execute(
            sa.text("SELECT min(c), max(c) FROM (SELECT count(*) c FROM order_lines GROUP BY order_id) x")
        ).one()
    engine.dispose()
    assert orphans == 0
    assert lo >= "2025-12-30 00:00:00" and hi < "2026-01-01 00:00:00"
    assert per_order == (1, 4)


def test_coupon_pool_and_erasure_requests(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    summary = erp.generate(url, contacts=100, products=5, orders=5, coupons=90, coupon_sets=3, erasures=8, seed=5)
    data = _dump(url)
    assert {r[1] for r in data["coupon_pool"]} == set(summary.coupon_sets) == set(erp.coupon_set_ids(5, 3))
    assert all(len(s) == 24 for s in summary.coupon_sets)
    statuses = {r[3] for r in data["coupon_pool"]}
    assert statuses <= {"used", "unused"} and "unused" in statuses
    assert all((r[3] == "used") == (r[5] is not None) for r in data["coupon_pool"])
    erasures = data["erasure_requests"]
    assert len(erasures) == 8
    assert erasures[-1][1] == "nobody.at.all@example.com"
    known = {erp.clean_email(5, i) for i in range(1, 101)}
    assert all(r[1].strip().lower() in known for r in erasures[:-1])
    assert any(r[3] is not None for r in erasures) and any(r[3] is None for r in erasures)


def test_generic_sqlalchemy_path_matches_the_fast_path(tmp_path: Path) -> None:
    """An in-memory SQLite URL has no file for ADBC: rows go through SQLAlchemy ``insert()`` and must match."""
    fast = f"sqlite:///{tmp_path / 'fast.db'}"
    erp.generate(fast, contacts=60, products=10, orders=10, coupons=12, seed=2)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'slow.db'}")
    writer = erp.Writer(engine)
    writer._adbc = None  # force the generic path
    erp.create_schema(engine)
    cols, _ = erp.customer_rows(2, 0, 60, erp.DEFAULT_NOW, 0.02)
    writer.write(erp.customers, cols)
    with engine.connect() as conn:
        slow = [tuple(r) for r in conn.execute(sa.select(erp.customers).order_by(erp.customers.c.id))]
    engine.dispose()
    assert slow == _dump(fast)["customers"]


def test_empty_tables_are_created_empty(tmp_path: Path) -> None:
    """No erasure requests, no orders, no coupons: the tables exist and hold no row (no crash on zero rows)."""
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    summary = erp.generate(url, contacts=20, products=3, orders=0, coupons=0, erasures=0)
    data = _dump(url)
    assert len(data["customers"]) == 20 and len(data["products"]) == 3
    assert data["erasure_requests"] == data["orders"] == data["order_lines"] == data["coupon_pool"] == []
    assert summary.rows["erasure_requests"] == summary.rows["orders"] == summary.rows["coupon_pool"] == 0


def test_zero_rows_on_the_generic_path(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'slow.db'}")
    erp.create_schema(engine)
    writer = erp.Writer(engine)
    writer._adbc = None  # force the generic path
    writer.write(erp.erasure_requests, [])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(erp.erasure_requests)).scalar() == 0
    engine.dispose()


def test_negative_counts_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"erasures=-1.*use 0 for an empty table"):
        erp.generate(f"sqlite:///{tmp_path / 'erp.db'}", contacts=5, products=1, erasures=-1)


def test_cli_sample_erp_with_no_erasures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``connectif-sync sample-erp --erasures 0`` crashed with "zip() argument 2 is shorter than argument 1"."""
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    args = ["sample-erp", "--url", url, "--contacts", "30", "--products", "4", "--orders", "5", "--erasures", "0"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"]["erasure_requests"] == 0 and summary["rows"]["customers"] == 30
    assert _dump(url)["erasure_requests"] == []


def test_cli_sample_erp_reports_a_negative_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    assert main(["sample-erp", "--url", url, "--contacts", "5", "--products", "1", "--orders", "-3"]) == 1
    assert "orders=-3" in capsys.readouterr().err


def test_other_commands_do_not_import_the_generator(tmp_path: Path) -> None:
    """The production CLI imports the generator only for ``sample-erp``."""
    state = f"sqlite:///{tmp_path / 'state.db'}"
    code = (
        "import sys\n"
        "from connectif_sync.cli import main\n"
        f"assert main(['suppressed', '--state', {state!r}]) == 0\n"
        "print('sample_erp' in sys.modules, 'connectif_sync.erp' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.strip().splitlines()[-1] == "False False"
