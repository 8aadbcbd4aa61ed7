"""Purchases grouped into API payloads per time window; the command line end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

import sample_erp as erp
from connectif_sync import StateStore, plan_purchases, purchase_payloads
from connectif_sync.cli import main


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('shop') / 'erp.db'}"
    erp.generate(url, contacts=200, products=50, orders=300, order_days=2, seed=9, dirty_rate=0.1)
    return url


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(sql))]
    engine.dispose()
    return rows


def test_payloads_group_lines_with_totals(shop: str, tmp_path: Path) -> None:
    batch = purchase_payloads(shop, "2025-12-31 00:00:00", "2026-01-01", state_url=f"sqlite:///{tmp_path / 's.db'}")
    payloads = {p["purchaseId"]: p for p in batch}
    orders = _query(shop, "SELECT order_number, ordered_at, email, cart_id, payment_method FROM orders o "
                          "JOIN customers c ON c.id = o.customer_id WHERE status = 'paid' "
                          "AND ordered_at >= '2025-12-31 00:00:00' AND ordered_at < '2026-01-01 00:00:00'")  # fmt: skip
    assert batch.report.sent == len(payloads) == len(orders) - batch.report.invalid
    assert batch.report.api_requests["purchases"] == len(payloads)
    number, ordered_at, email, cart, pay = next(o for o in orders if o[0] in payloads)
    p = payloads[str(number)]
    lines = _query(shop, f"SELECT p.sku, p.name, p.url, l.unit_price, l.quantity FROM order_lines l JOIN orders o "
                         f"ON o.id = l.order_id JOIN products p ON p.id = l.product_id "
                         f"WHERE o.order_number = '{number}' ORDER BY l.id")  # fmt: skip
    assert p["contactEmail"] == str(email).strip().lower() and p["cartId"] == cart and p["paymentMethod"] == pay
    assert p["purchaseDate"] == str(ordered_at).replace(" ", "T") + "Z"
    assert [
        (x["productId"], x["name"], x["productDetailUrl"], x["unitPrice"], x["quantity"]) for x in p["products"]
    ] == [
        (sku, name, url, float(price), qty)
        for sku, name, url, price, qty in lines  # type: ignore[arg-type]
    ]
    assert p["totalQuantity"] == sum(int(q) for *_, q in lines)  # type: ignore[call-overload]
    assert p["totalPrice"] == pytest.approx(sum(float(pr) * int(q) for *_, pr, q in lines), abs=0.011)  # type: ignore[call-overload]
    assert all(x["price"] == pytest.approx(x["unitPrice"] * x["quantity"], abs=0.011) for x in p["products"])
    for r in batch.rejected:
        assert r["key"].startswith("SO-") and r["field"] and r["reason"]


def test_window_is_half_open_and_done_purchases_are_skipped(shop: str, tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path / 's.db'}"
    day1 = [p["purchaseId"] for p in purchase_payloads(shop, "2025-12-30", "2025-12-31", state_url=state)]
    day2 = [p["purchaseId"] for p in purchase_payloads(shop, "2025-12-31", "2026-01-01", state_url=state)]
    both = [p["purchaseId"] for p in purchase_payloads(shop, "2025-12-30", "2026-01-01", state_url=state)]
    assert sorted(both) == sorted(day1 + day2) and not set(day1) & set(day2)
    with StateStore(state) as store:
        store.record_purchase(day1[0], "confirmed")
        store.record_purchase(day1[1], "duplicate", "409 already exists")
        store.record_purchase(day1[2], "failed", "500")
    again = purchase_payloads(shop, "2025-12-30", "2025-12-31", state_url=state)
    ids = [p["purchaseId"] for p in again]
    assert ids == day1[2:] and again.report.unchanged == 2
    assert plan_purchases(shop, "2025-12-30", "2025-12-31", state_url=state).sent == len(day1) - 2


def test_cli_sample_plan_extract_confirm_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    erp_url, state = f"sqlite:///{tmp_path / 'erp.db'}", f"sqlite:///{tmp_path / 'state.db'}"
    assert main(["sample-erp", "--url", erp_url, "--contacts", "300", "--products", "30", "--orders", "40",
                 "--seed", "4", "--now", "2025-06-01T00:00:00Z"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"]["customers"] == 300 and summary["now"] == "2025-06-01T00:00:00"
    assert main(["plan", "--object", "contacts", "--source", erp_url, "--state", state]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["report"]["mode"] == "plan" and plan["report"]["files"] == 1 and "files" not in plan
    assert not (tmp_path / "state.db").exists()
    out = tmp_path / "out"
    assert main(["extract", "--object", "contacts", "--source", erp_url, "--state", state, "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["report"]["sent"] == plan["report"]["sent"] and doc["files"][0]["path"] == str(out / "contacts-0001.csv")
    assert main(["confirm", "--state", state, str(out / "contacts-0001.csv"), "--failed-lines", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == 1
    assert main(["rejected", "--object", "contacts", "--state", state, "--limit", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == min(3, doc["rejected"])
    assert main(["extract", "--object", "purchases", "--source", erp_url, "--state", state, "--out", str(out),
                 "--start", "2025-05-01", "--end", "2025-06-01"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    payloads = (out / "purchases-0001.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(payloads) == doc["report"]["sent"] > 0 and json.loads(payloads[0])["products"]


def test_cli_reports_a_broken_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("object: contacts\nsource: {table: customers}\nfields: {_nope: x}\n", encoding="utf-8")
    code = main(["plan", "--object", "contacts", "--source", "sqlite:///x.db", "--mapping", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}: fields._nope: unknown Connectif field" in err and "Fix:" in err


def test_orders_spanning_chunks_and_empty_sources(shop: str, tmp_path: Path) -> None:
    """Small chunks cut orders in the middle: the payloads must not change. An empty source sends nothing."""
    big = list(purchase_payloads(shop, state_url=f"sqlite:///{tmp_path / 'a.db'}"))
    small = list(purchase_payloads(shop, state_url=f"sqlite:///{tmp_path / 'b.db'}", chunk_rows=7))
    assert small == big and len(big) > 100
    from connectif_sync import run_sync

    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    erp.generate(empty, contacts=1, products=1, orders=0, coupons=0, coupon_sets=0, dirty_rate=0)
    engine = sa.create_engine(empty)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM erasure_requests"))
        conn.execute(sa.text("DELETE FROM customers"))
    engine.dispose()
    result = run_sync("contacts", empty, tmp_path / "out", state_url=f"sqlite:///{tmp_path / 'c.db'}")
    assert (result.report.extracted, result.report.sent, result.files) == (0, 0, [])
    assert list(purchase_payloads(empty, state_url=f"sqlite:///{tmp_path / 'c.db'}")) == []
    with pytest.raises(ValueError, match="needs out_dir"):
        run_sync("contacts", empty, None)


def test_cli_suppress_list_and_withdraw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    erp_url, state = f"sqlite:///{tmp_path / 'erp.db'}", f"sqlite:///{tmp_path / 'state.db'}"
    assert main(["sample-erp", "--url", erp_url, "--contacts", "200", "--products", "5", "--orders", "5",
                 "--seed", "4", "--dirty-rate", "0"]) == 0  # fmt: skip
    capsys.readouterr()
    first = erp.clean_email(4, 1)
    assert (
        main(["suppress", "--object", "contacts", "--state", state, "--reason", "erasure 42", f" {first.upper()} "])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {"suppressed": 1}
    assert main(["suppressed", "--state", state]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["object"], row["key"], row["reason"]) == ("contacts", first, "erasure 42")
    assert main(["plan", "--object", "contacts", "--source", erp_url, "--state", state]) == 0
    report = json.loads(capsys.readouterr().out)["report"]
    assert (report["suppressed"], report["sent"]) == (1, 199)
    assert main(["unsuppress", "--object", "contacts", "--state", state, first]) == 0
    assert json.loads(capsys.readouterr().out) == {"unsuppressed": 1}
