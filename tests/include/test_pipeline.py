"""End to end on small sample ERPs: every kind of dirty data, change detection, confirm-after-import."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

import sample_erp as erp
from connectif_sync import MAPPINGS_DIR, StateStore, plan_sync, run_sync
from connectif_sync.probe import PROBE_SPAN
from connectif_sync.rejects import SUPPRESSED_REASON

SEED = 3


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, erp.GenerationSummary]:
    path = tmp_path_factory.mktemp("erp") / "erp.db"
    url = f"sqlite:///{path}"
    summary = erp.generate(url, contacts=2000, products=400, orders=50, coupons=300, seed=SEED, dirty_rate=0.1)
    return url, summary


def _copy(sample: tuple[str, erp.GenerationSummary], tmp_path: Path) -> str:
    src = Path(sa.make_url(sample[0]).database or "")
    dst = tmp_path / "erp.db"
    dst.write_bytes(src.read_bytes())
    return f"sqlite:///{dst}"


def _csv(path: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:  # newline="": keep \r\n inside values
        return list(csv.DictReader(fh))


def _confirmed_first_run(sample, tmp_path: Path, chunk_rows: int):  # type: ignore[no-untyped-def]
    """A copy of the sample ERP, and a first contacts run whose files Connectif confirmed in full."""
    url = _copy(sample, tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "a", state_url=state, chunk_rows=chunk_rows)
    with StateStore(state) as store:
        for f in first.files:
            store.confirm_file(f.path)
    return url, state, first


def _exec(url: str, sql: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def test_contacts_first_run_handles_every_kind_of_dirty_data(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, summary = sample
    state = f"sqlite:///{tmp_path / 'state.db'}"
    result = run_sync("contacts", url, tmp_path / "out", state_url=state)
    dirty = summary.dirty["customers"]
    r = result.report
    assert r.extracted == 2000
    assert r.invalid == len(dirty["invalid_email"]) + len(dirty["null_email"]) + len(dirty["long_name"]) + len(
        dirty["invalid_phone"]
    )
    assert r.duplicate == len(dirty["duplicate_email"])
    assert r.sent == r.new == 2000 - r.invalid - r.duplicate and r.unchanged == r.changed == r.deleted == 0
    assert r.files == 1 and r.bytes == Path(result.files[0].path).stat().st_size
    with StateStore(state) as store:
        by_ref = {(x["source_ref"], x["field"], x["reason"]) for x in store.rejected("contacts", limit=10_000)}
    expect = {
        "invalid_email": ("_email", "invalid email address"),
        "null_email": ("_email", "required field is empty"),
        "long_name": ("_name", "longer than 255 characters"),
        "duplicate_email": ("_email", "duplicate key: an earlier row with the same key was kept"),
    }
    for kind, (field, reason) in expect.items():
        for i in dirty[kind]:
            assert (f"id={i}", field, reason) in by_ref, (kind, i)
    phone_reason = "invalid phone number (expected an international number, e.g. +34600111222)"
    assert {(f"id={i}", "_mobilePhone", phone_reason) for i in dirty["invalid_phone"]} <= by_ref
    rows = {row["_externalId"]: row for row in _csv(result.files[0].path)}
    assert len(rows) == r.sent
    for i in dirty["special_chars"]:
        assert rows[f"{i:09d}"]["_surname"] == erp.SPECIAL_LAST  # quotes, commas, newline, pipe round-trip
    for i in dirty["unicode"]:
        assert rows[f"{i:09d}"]["_name"] == erp.UNICODE_FIRST
    for i in dirty["leading_zeros"]:
        assert not rows[f"{i:09d}"]["_points"].startswith("0")
    one = rows["000000001"]
    assert one["_email"] == erp.clean_email(SEED, 1)
    assert all(v == "" or v.startswith("+") for v in (row["_mobilePhone"] for row in rows.values()))
    assert set(one) == {"_email", "_externalId", "_name", "_surname", "_birthdate", "_mobilePhone", "_points",
                        "_newsletterSubscriptionStatus", "_smsSubscriptionStatus", "favourite_categories",
                        "customer_tier"}  # fmt: skip


def test_change_detection_confirm_and_failed_lines(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = _copy(sample, tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "run1", state_url=state)
    # Nothing confirmed yet: a second run sends everything again, and the first run's files are superseded.
    assert run_sync("contacts", url, tmp_path / "run1b", state_url=state).report.new == first.report.sent
    with StateStore(state) as store:
        assert {f["status"] for f in store.files("contacts")} == {"superseded", "pending"}
        out = store.confirm_import({"import_id": "x", "status": "finished", "file_path": first.files[0].path,
                                    "rejected_rows": [{"line": 5, "field": "_email", "error": "bad"},
                                                      {"line": 9, "field": "", "error": "nope"}]})  # fmt: skip
        assert out == {
            "object": "contacts",
            "path": first.files[0].path,
            "confirmed": first.report.sent - 2,
            "failed": 2,
        }
        pending = sorted((p["line"], p["reason"]) for p in store.pending("contacts"))
        assert pending == [(5, "_email: bad"), (9, "nope")]
    lines = _csv(first.files[0].path)
    second = run_sync("contacts", url, tmp_path / "run2", state_url=state)
    assert (second.report.new, second.report.changed, second.report.sent) == (2, 0, 2)
    assert [r["_email"] for r in _csv(second.files[0].path)] == [lines[4]["_email"], lines[8]["_email"]]
    with StateStore(state) as store:
        store.confirm_file(second.files[0].path)
        assert store.pending("contacts") == []
    _exec(url, "UPDATE customers SET first_name = 'Renamed' WHERE id = 1")
    dirty = sample[1].dirty["customers"]
    gone = next(i for i in range(3, 2000, 2) if i + 1 not in dirty["duplicate_email"] and i > 9)
    _exec(url, f"DELETE FROM customers WHERE id = {gone}")
    third = run_sync("contacts", url, tmp_path / "run3", state_url=state)
    assert (third.report.changed, third.report.new, third.report.deleted, third.report.sent) == (1, 0, 1, 1)
    assert third.deleted_keys == [erp.clean_email(SEED, gone)]
    assert _csv(third.files[0].path)[0]["_name"] == "Renamed"
    resync = run_sync("contacts", url, tmp_path / "run4", state_url=state, full_resync=True)
    assert resync.report.sent == first.report.sent - 1 and resync.report.mode == "full_resync"


def test_incremental_run_uses_the_watermark(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = _copy(sample, tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "a", state_url=state, incremental=True)
    assert first.report.mode == "full"  # no watermark yet
    with StateStore(state) as store:
        store.confirm_file(first.files[0].path)
    _exec(url, "UPDATE customers SET last_name = 'Changed', updated_at = '2026-01-02 00:00:00' WHERE id IN (5, 7, 9)")
    inc = run_sync("contacts", url, tmp_path / "b", state_url=state, incremental=True, lookback=timedelta(minutes=5))
    r = inc.report
    assert r.mode == "incremental" and r.since is not None and r.since < "2026-01-01"
    assert r.extracted < 50 and (r.changed, r.sent, r.deleted) == (3, 3, 0)
    assert sorted(row["_externalId"] for row in _csv(inc.files[0].path)) == ["000000005", "000000007", "000000009"]
    assert r.high_water == "2026-01-02 00:00:00"
    # while the file is not confirmed, the next incremental run starts no later than its rows
    again = run_sync("contacts", url, tmp_path / "c", state_url=state, incremental=True, lookback=timedelta(0))
    assert again.report.sent == 3


def test_an_incremental_run_reads_the_confirmed_state_once(sample, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Many chunks of changed rows: the state's snapshot is read once for the run (it was read again for every
    chunk, 24 MB per million confirmed keys), and each chunk's rows are still told apart right."""
    from connectif_sync.store import index

    url = _copy(sample, tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "a", state_url=state)
    with StateStore(state) as store:
        for f in first.files:
            store.confirm_file(f.path)
    ids = sorted({int(r["_externalId"]) for r in _csv(first.files[0].path)})[:120]
    listed, halves = ",".join(map(str, ids)), ",".join(map(str, ids[::2]))
    _exec(url, f"UPDATE customers SET updated_at = '2026-01-02 00:00:00' WHERE id IN ({listed})")
    _exec(url, f"UPDATE customers SET last_name = 'Changed' WHERE id IN ({halves})")
    reads = []
    real = index._read_snapshot
    monkeypatch.setattr(index, "_read_snapshot", lambda *a: reads.append(1) or real(*a))
    inc = run_sync("contacts", url, tmp_path / "b", state_url=state, incremental=True, chunk_rows=16,
                   lookback=timedelta(0))  # fmt: skip
    r = inc.report
    engine = sa.create_engine(url)
    with engine.connect() as conn:  # the 120 rows, and any whose updated_at is the first run's high-water mark
        window = conn.execute(sa.text("SELECT COUNT(*) FROM customers WHERE updated_at >= :s"), {"s": r.since})
        assert r.extracted == window.scalar_one() >= 120
    engine.dispose()
    assert r.mode == "incremental" and r.extracted // 16 >= 7 and len(reads) == 1
    assert (r.changed, r.new, r.sent) == (60, 0, 60) and r.unchanged >= 60
    sent = sorted(int(row["_externalId"]) for f in inc.files for row in _csv(f.path))
    assert sent == ids[::2]


def test_dry_run_writes_nothing(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, _ = sample
    state_file = tmp_path / "state.db"
    report = plan_sync("contacts", url, state_url=f"sqlite:///{state_file}")
    assert report.mode == "plan" and report.files == 1 and report.bytes > 0 and report.sent > 0
    assert report.api_requests == {"imports": 1, "min_requests": 2, "max_requests_if_every_import_has_errors": 3,
                                   "queue_waves": 1, "min_minutes_at_rate_limit": 0.02,
                                   "rate_limit_per_minute": 90}  # fmt: skip
    assert not state_file.exists() and list(tmp_path.iterdir()) == []
    real = run_sync("contacts", url, tmp_path / "out", state_url=f"sqlite:///{state_file}", max_file_bytes=100_000)
    assert real.report.files == plan_sync("contacts", url, max_file_bytes=100_000).files > 1
    assert all(Path(f.path).stat().st_size <= 100_000 for f in real.files)


def test_products_from_sql_source(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, summary = sample
    result = run_sync("products", url, tmp_path / "out", state_url=f"sqlite:///{tmp_path / 's.db'}")
    dirty = summary.dirty["products"]
    rows = {r["productId"]: r for r in _csv(result.files[0].path)}
    for kind in ("negative_price", "null_name", "null_price", "long_name"):
        assert not any(f"{i:07d}" in rows for i in dirty[kind]), kind
    for i in dirty["special_chars"]:
        assert rows[f"{i:07d}"]["description"] == erp.SPECIAL_DESCRIPTION
    for i in dirty["leading_zeros"]:
        assert not rows[f"{i:07d}"]["inStockUnits"].startswith("0") or rows[f"{i:07d}"]["inStockUnits"] == "0"
    assert result.report.duplicate == len(dirty["duplicate_sku"])
    p1 = rows["0000001"]
    assert p1["productDetailUrl"].startswith("https://shop.example.com/p/0000001-")
    assert p1["categories"].count("/") >= 1 and "|" not in p1["categories"]
    assert p1["publishedAt"].endswith("Z") and p1["availability"] in ("instock", "outofstock")
    assert float(p1["unitPrice"]) == pytest.approx(float(p1["unitPriceWithoutVAT"]) * 1.21, abs=0.01)


def test_coupons_one_file_series_per_set(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, summary = sample
    result = run_sync("coupons", url, tmp_path / "out", state_url=f"sqlite:///{tmp_path / 's.db'}")
    assert {f.partition for f in result.files} == set(summary.coupon_sets)
    for f in result.files:
        assert Path(f.path).name == f"coupons-{f.partition}-0001.csv"
        codes = [r["code"] for r in _csv(f.path)]
        assert len(codes) == len(set(codes)) == f.rows
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        unused = conn.execute(sa.text("SELECT count(*) FROM coupon_pool WHERE status = 'unused'")).scalar_one()
    engine.dispose()
    assert result.report.extracted == unused
    assert result.report.sent + result.report.invalid + result.report.duplicate == unused


def test_full_scan_skips_confirmed_sources_but_keeps_the_rules(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Rows whose source Connectif confirmed are not reshaped; duplicates and mapping changes still count."""
    url = _copy(sample, tmp_path)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    first = run_sync("contacts", url, tmp_path / "a", state_url=state, chunk_rows=100)
    with StateStore(state) as store:
        store.confirm_file(first.files[0].path)
    # beyond the first probe page (PROBE_SPAN chunks of 100 rows): the early row comes in an earlier page
    assert PROBE_SPAN * 100 <= 1200
    target = next(i for i in range(1201, 2000, 2) if i not in set().union(*sample[1].dirty["customers"].values()))
    email = erp.clean_email(SEED, target)
    _exec(url, f"INSERT INTO customers SELECT 0, '000000000', '{email}', 'Early', last_name, birthdate, mobile_phone, "
               f"country, loyalty_points, newsletter_consent, sms_consent, favourite_categories, customer_tier, "
               f"created_at, updated_at FROM customers WHERE id = {target}")  # fmt: skip
    second = run_sync("contacts", url, tmp_path / "b", state_url=state, chunk_rows=100)
    r = second.report
    assert (r.changed, r.new, r.sent, r.duplicate, r.deleted) == (1, 0, 1, first.report.duplicate + 1, 0)
    assert _csv(second.files[0].path)[0]["_name"] == "Early"
    assert {"key": email, "source_ref": None, "field": "_email", "value": None,
            "reason": "duplicate key: an earlier row with the same key was kept"} in second.rejected  # fmt: skip
    assert r.unchanged == first.report.sent - 1
    # another mapping (here: one more field) changes every row's output: nothing is skipped
    changed = tmp_path / "m.yaml"
    doc = yaml.safe_load((MAPPINGS_DIR / "contacts.yaml").read_text(encoding="utf-8"))
    doc["fields"]["customer_code"] = {"column": "customer_code", "type": "string"}
    changed.write_text(yaml.safe_dump(doc), encoding="utf-8")
    third = run_sync("contacts", url, tmp_path / "c", state_url=state, mapping=changed)
    assert third.report.unchanged == 0 and third.report.changed == first.report.sent


def test_full_scan_duplicate_rule_between_confirmed_and_changed_rows(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A later row that repeats the key of an unchanged confirmed row is the duplicate (first row kept),
    whether it comes in a later chunk or in the same one; deletions are still counted exactly."""
    url, state, first = _confirmed_first_run(sample, tmp_path, 150)
    dirty = set().union(*sample[1].dirty["customers"].values())
    early, late = (next(i for i in range(lo, 2000, 2) if i not in dirty) for lo in (301, 1971))
    # 150-row chunks: the twin of `early` is many chunks before id 5001; `late` and id 2050 share the last one
    for new_id, twin in ((5001, early), (2050, late)):
        _exec(url, f"INSERT INTO customers SELECT {new_id}, customer_code, email, 'Later', last_name, birthdate, "
                   f"mobile_phone, country, loyalty_points, newsletter_consent, sms_consent, favourite_categories, "
                   f"customer_tier, created_at, updated_at FROM customers WHERE id = {twin}")  # fmt: skip
    _exec(url, f"DELETE FROM customers WHERE id = {early + 2}")
    second = run_sync("contacts", url, tmp_path / "b", state_url=state, chunk_rows=150)
    r = second.report
    assert (r.new, r.changed, r.sent, r.deleted) == (0, 0, 0, 1)
    assert r.duplicate == first.report.duplicate + 2
    assert r.unchanged == first.report.sent - 1
    later = {x["key"] for x in second.rejected if x["source_ref"] in ("id=5001", "id=2050")}
    assert later == {erp.clean_email(SEED, early), erp.clean_email(SEED, late)}


def test_suppressed_keys_are_never_sent_until_unsuppressed(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Erased contacts: whether their row is unchanged, changed, resynced or in a watermark window, it is set
    aside with the suppression's reason, counted, and not reported as deleted."""
    url, state, first = _confirmed_first_run(sample, tmp_path, 300)
    dirty = set().union(*sample[1].dirty["customers"].values())
    a, b = (next(i for i in range(lo, 2000, 2) if i not in dirty) for lo in (101, 1501))
    ea, eb = erp.clean_email(SEED, a), erp.clean_email(SEED, b)
    with StateStore(state) as store:
        assert store.suppress("contacts", [ea, eb, ""], "erasure request id=7") == 2
        assert store.suppress("contacts", [ea], "again") == 0  # the first reason stays
        assert [(s["key"], s["reason"]) for s in store.suppressed("contacts")] == sorted(
            [(ea, "erasure request id=7"), (eb, "erasure request id=7")]
        )
    _exec(url, f"UPDATE customers SET first_name = 'Changed', updated_at = '2026-01-02 00:00:00' WHERE id = {b}")

    def aside(result) -> dict[str, str | None]:  # type: ignore[no-untyped-def]
        return {r["key"]: r["source_ref"] for r in result.rejected if r["reason"] == SUPPRESSED_REASON}

    full = run_sync("contacts", url, tmp_path / "b", state_url=state, chunk_rows=300)
    r = full.report
    assert (r.suppressed, r.sent, r.changed, r.new, r.deleted) == (2, 0, 0, 0, 0)
    assert r.unchanged == first.report.sent - 2
    assert aside(full) == {ea: None, eb: f"id={b}"}  # a: skipped as unchanged; b: changed, read from the row
    assert {x["value"] for x in full.rejected if x["reason"] == SUPPRESSED_REASON} == {"erasure request id=7"}
    resync = run_sync("contacts", url, tmp_path / "c", state_url=state, full_resync=True)
    assert resync.report.suppressed == 2 and resync.report.sent == first.report.sent - 2
    sent = {row["_email"] for f in resync.files for row in _csv(f.path)}
    assert ea not in sent and eb not in sent
    with StateStore(state) as store:  # confirmed: the next incremental run's window starts at the watermark
        for f in resync.files:
            store.confirm_file(f.path)
    inc = run_sync("contacts", url, tmp_path / "d", state_url=state, incremental=True, lookback=timedelta(0))
    assert inc.report.mode == "incremental" and (inc.report.suppressed, inc.report.sent) == (1, 0)
    with StateStore(state) as store:
        assert store.unsuppress("contacts", [eb, "nobody@example.com"]) == 1
    back = run_sync("contacts", url, tmp_path / "e", state_url=state, chunk_rows=300)
    assert (back.report.suppressed, back.report.changed, back.report.sent) == (1, 1, 1)
    assert [row["_email"] for row in _csv(back.files[0].path)] == [eb]


def test_sync_params_is_run_sync_as_one_object(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from connectif_sync import SyncParams, sync

    url, _ = sample
    with pytest.raises(ValueError, match="purchase_payloads"):
        sync(SyncParams("purchases", url, tmp_path))
    with pytest.raises(ValueError, match="needs out_dir"):
        sync(SyncParams("contacts", url, None))
    state = f"sqlite:///{tmp_path / 'state.db'}"
    by_params = sync(SyncParams("products", url, tmp_path / "a", state_url=state, dry_run=True, chunk_rows=100))
    by_call = run_sync("products", url, tmp_path / "b", state_url=state, dry_run=True, chunk_rows=100)
    drop = ("run_id", "duration_s")
    assert {k: v for k, v in by_params.report.as_dict().items() if k not in drop} == {
        k: v for k, v in by_call.report.as_dict().items() if k not in drop
    }
    assert by_params.report.mode == "plan" and by_params.report.sent > 0


def test_a_mapping_that_reads_a_missing_column_fails_before_any_run_is_recorded(sample, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The source's columns are checked before the run starts: the error names the mapping's entry and the
    fix, and neither a first run nor a full scan over a confirmed state records a run."""
    from connectif_sync import MappingError, load_mapping

    url, state, _ = _confirmed_first_run(sample, tmp_path, 500)
    raw = yaml.safe_load((MAPPINGS_DIR / "contacts.yaml").read_text())
    raw["fields"]["_name"]["column"] = "given_name"
    bad = tmp_path / "contacts.yaml"
    bad.write_text(yaml.safe_dump(raw))
    for state_url in (state, f"sqlite:///{tmp_path / 'new.db'}"):
        with StateStore(state_url) as store:
            before = len(store.runs("contacts"))
        with pytest.raises(MappingError, match=r"fields\._name\.column: column 'given_name' is not in the source.*Fix"):
            run_sync("contacts", url, tmp_path / "bad", state_url=state_url, mapping=load_mapping(bad))
        with StateStore(state_url) as store:
            assert len(store.runs("contacts")) == before


def test_a_run_keeps_the_objects_before_it_out_of_full_collections_and_gives_them_back(
    sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """During a run the process's earlier objects are frozen (a full collection would walk them all while
    holding the GIL); after it, and after a failed one, nothing stays frozen. A caller's own freeze, or a
    collector turned off, is left as it was."""
    import gc

    from connectif_sync import pipeline

    frozen_during: list[int] = []
    real_begin = pipeline._begin

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        frozen_during.append(gc.get_freeze_count())
        return real_begin(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_begin", spy)
    url = _copy(sample, tmp_path)
    assert gc.get_freeze_count() == 0
    run_sync("contacts", url, tmp_path / "a", state_url=f"sqlite:///{tmp_path / 's.db'}")
    assert frozen_during[-1] > 1000 and gc.get_freeze_count() == 0
    with pytest.raises(ValueError, match="out_dir"):
        run_sync("contacts", url, None)
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze its own objects (a server about to fork)
    try:
        mine = gc.get_freeze_count()
        run_sync("contacts", url, tmp_path / "b", state_url=f"sqlite:///{tmp_path / 's.db'}")
        assert frozen_during[-1] == mine and gc.get_freeze_count() == mine
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        run_sync("contacts", url, tmp_path / "c", state_url=f"sqlite:///{tmp_path / 's.db'}")
        assert frozen_during[-1] == 0 and not gc.isenabled()
    finally:
        gc.enable()
