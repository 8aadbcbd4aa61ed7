"""Issue 12, data safety: one bad row never blocks the others, and nothing is confirmed without proof.

Every test drives the real path: the sample ERP (SQLite) -> ``run_sync`` -> ``ConnectifImportOperator``
(waiting on the worker) -> the emulator -> ``StateStore.confirm_import``, with the state store on SQLite
and on PostgreSQL (``pg_database``). Each bad row must be set aside with its key, source row, field and
reason while every valid row of the run arrives in Connectif.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectif_provider.operators.connectif import ConnectifImportOperator
from connectif_sync.mappings import MappingError
from connectif_sync.pipeline import run_sync
from connectif_sync.purchases import PurchaseBatch
from connectif_sync.report import SyncResult
from connectif_sync.shape import BAD_UTF8_REASON, TOO_LARGE_REASON
from connectif_sync.state import StateStore
from emulator.testing import RunningEmulator
from sample_erp import generate
from tests.fixtures.provider import DictStore
from tests.fixtures.sql import query
from tests.fixtures.store import clear_schema_mark

CONTACTS = 40
PRODUCTS = 12


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The state store on SQLite, then on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.sqlite'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def erp(tmp_path: Path) -> str:
    """A clean sample ERP (no dirty rows): every row is valid until a test breaks one."""
    url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    generate(url, contacts=CONTACTS, products=PRODUCTS, orders=0, coupons=0, coupon_sets=1, dirty_rate=0, seed=7)
    return url


@pytest.fixture
def conn_id(emulator: RunningEmulator, connectif_conn: Callable[..., str]) -> str:
    emulator.admin.configure(rate_limit=100_000)
    return connectif_conn(emulator.base_url, emulator.api_key, rate_limit_per_minute=100_000)


def sql(erp_url: str, statement: str, *params: Any) -> None:
    """Break the ERP the way a user would, with raw SQLite (bytes go in as they are)."""
    with sqlite3.connect(sa.make_url(erp_url).database or "") as conn:
        conn.execute(statement, params)


def erp_rows(erp_url: str, sql: str) -> list[dict[str, Any]]:
    return query(erp_url, sql)


def operator(conn_id: str, path: str, obj: str, ledger: str | None = None) -> ConnectifImportOperator:
    return ConnectifImportOperator(
        task_id=f"import_{Path(path).stem}",
        file_path=path,
        import_type=obj,
        override_existing=True,
        connectif_conn_id=conn_id,
        poll_interval=0.2,
        deferrable=False,
        upload_ledger=(lambda: StateStore(ledger)) if ledger else None,
    )


def sync(
    obj: str, erp_url: str, state_url: str, out: Path, conn_id: str, **kwargs: Any
) -> tuple[SyncResult, list[dict[str, Any]], list[dict[str, Any]]]:
    """One run as the DAG does it: extract, one import per file, confirm. Returns the result, the import
    summaries and the confirmation outcomes."""
    result = run_sync(obj, erp_url, out, state_url=state_url, **kwargs)
    summaries = [operator(conn_id, f.path, obj, state_url).execute({"task_state_store": DictStore()})
                 for f in result.files]  # fmt: skip
    with StateStore(state_url) as store:
        outcomes = [store.confirm_import(s) for s in summaries]
    return result, summaries, outcomes


def rejected(state_url: str, obj: str) -> list[dict[str, Any]]:
    with StateStore(state_url) as store:
        return store.rejected(obj)


def valid_emails(erp_url: str, bad_ids: set[int]) -> set[str]:
    rows = erp_rows(erp_url, "SELECT id, email FROM customers")
    return {r["email"].strip().lower() for r in rows if r["id"] not in bad_ids}


# ------------------------------------------------------------------------------------- cases 1 and 2


def test_invalid_utf8_text_and_blobs_cost_their_row_only(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    sql(erp, "UPDATE customers SET first_name = CAST(x'4a6f73c3a928ff' AS TEXT) WHERE id = 25")  # case 1
    sql(erp, "UPDATE customers SET last_name = x'4a6fff00' WHERE id = 5")  # case 2: a BLOB in a text column
    sql(erp, "UPDATE customers SET loyalty_points = x'31ff' WHERE id = 9")  # case 2: in an integer column
    sql(erp, "UPDATE customers SET first_name = x'4ac3a973c3a9' WHERE id = 11")  # a valid UTF-8 BLOB: kept

    result, summaries, _ = sync("contacts", erp, state_url, tmp_path / "out", conn_id)

    assert result.report.invalid == 3
    got = {r["source_ref"]: r for r in rejected(state_url, "contacts")}
    assert set(got) == {"id=25", "id=5", "id=9"}
    assert (got["id=25"]["field"], got["id=5"]["field"], got["id=9"]["field"]) == ("_name", "_surname", "_points")
    assert all(r["reason"] == BAD_UTF8_REASON and r["key"] and "@" in r["key"] for r in got.values())
    assert got["id=25"]["value"] == "José(\\xff" and got["id=5"]["value"] == "Jo\\xff\\x00"
    stored = {c["_email"]: c for c in emulator.admin.contacts()}
    assert set(stored) == valid_emails(erp, {25, 5, 9})
    (email_11,) = [r["email"].strip().lower() for r in erp_rows(erp, "SELECT email FROM customers WHERE id = 11")]
    assert stored[email_11]["_name"] == "Jésé"  # a BLOB of valid UTF-8 is its text
    assert sum(s["errors"] for s in summaries) == 0


def test_invalid_utf8_in_a_watermark_run_and_a_full_resync(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    sync("contacts", erp, state_url, tmp_path / "out1", conn_id)
    sql(
        erp,
        "UPDATE customers SET first_name = CAST(x'41ff' AS TEXT), updated_at = '2030-01-01 00:00:00' WHERE id = 3",
    )
    sql(erp, "UPDATE customers SET last_name = 'Changed', updated_at = '2030-01-01 00:00:00' WHERE id = 4")

    result, _, _ = sync("contacts", erp, state_url, tmp_path / "out2", conn_id, incremental=True)

    assert result.report.mode == "incremental"
    assert result.report.invalid == 1 and result.report.sent == 1
    assert [r["source_ref"] for r in rejected(state_url, "contacts")] == ["id=3"]

    result, _, _ = sync("contacts", erp, state_url, tmp_path / "out3", conn_id, full_resync=True)

    assert result.report.invalid == 1 and result.report.sent == CONTACTS - 1
    assert len(emulator.admin.contacts()) == CONTACTS  # id 3 arrived in the first run, before it broke


# ------------------------------------------------------------------------------------------- case 3


def test_numbers_beyond_int64_are_set_aside_not_wrapped(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    sql(erp, "UPDATE customers SET loyalty_points = '99999999999999999999' WHERE id = 7")
    sql(erp, "UPDATE customers SET loyalty_points = '9223372036854775807' WHERE id = 8")  # the largest: valid
    sql(erp, "UPDATE products SET price = 1e19 WHERE id = 2")
    sql(erp, "UPDATE products SET stock = '99999999999999999999' WHERE id = 3")

    contacts, _, _ = sync("contacts", erp, state_url, tmp_path / "c", conn_id)
    products, _, _ = sync("products", erp, state_url, tmp_path / "p", conn_id)

    assert contacts.report.rejected_by_reason == {f"_points: {TOO_LARGE_REASON}": 1}
    assert products.report.rejected_by_reason == {
        f"unitPrice: {TOO_LARGE_REASON}": 1,
        f"inStockUnits: {TOO_LARGE_REASON}": 1,
    }
    assert {r["source_ref"] for r in rejected(state_url, "products")} == {"id=2", "id=3"}
    points = {c["_email"]: c.get("_points") for c in emulator.admin.contacts()}
    assert len(points) == CONTACTS - 1
    assert 9223372036854775807 in points.values() or "9223372036854775807" in map(str, points.values())
    assert all(p is None or int(p) >= 0 for p in points.values())
    skus = {r["id"]: r["sku"] for r in erp_rows(erp, "SELECT id, sku FROM products")}
    stored = {p["productId"]: p for p in emulator.admin.products()}
    assert set(stored) == {s for i, s in skus.items() if i not in (2, 3)}
    assert all(float(p["unitPrice"]) >= 0 for p in stored.values())


# ------------------------------------------------------------------------------------------- case 4


def test_a_row_too_large_for_any_file_names_its_source_row_and_field(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    sql(erp, "UPDATE products SET description = ? WHERE id = 4", "x" * 4000)

    result, _, _ = sync("products", erp, state_url, tmp_path / "out", conn_id, max_file_bytes=3000)

    assert result.report.oversize == 1
    (row,) = rejected(state_url, "products")
    assert (row["source_ref"], row["field"]) == ("id=4", "description")
    assert "shorten this field" in row["reason"] and "this field 4000" in row["value"]
    assert len(emulator.admin.products()) == PRODUCTS - 1


# ------------------------------------------------------------------------------------------- case 5


def test_keys_longer_than_1000_characters(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    invalid = "x" * 1500  # our validation rejects it: a rejected key of 1,500 characters
    accepted_by_us = "a" * 60 + "@" + ".".join(["b" * 60] * 19) + ".com"  # 1,224 characters, Connectif says no
    sql(erp, "UPDATE customers SET email = ? WHERE id = 2", invalid)
    sql(erp, "UPDATE customers SET email = ? WHERE id = 3", accepted_by_us)

    result, summaries, outcomes = sync("contacts", erp, state_url, tmp_path / "out1", conn_id)

    assert [r["key"] for r in rejected(state_url, "contacts")] == [invalid]
    assert sum(s["errors"] for s in summaries) == 1
    assert sum(o["confirmed"] for o in outcomes) == CONTACTS - 2
    with StateStore(state_url) as store:
        assert [p["key"] for p in store.pending("contacts")] == [accepted_by_us]
        assert all(f["status"] == "confirmed" for f in store.files("contacts"))
    assert len(emulator.admin.contacts()) == CONTACTS - 2

    result, _, outcomes = sync("contacts", erp, state_url, tmp_path / "out2", conn_id)  # the next run works too

    assert result.report.sent == 1 and outcomes[0]["failed"] == 1


def test_postgresql_store_of_an_earlier_version_is_migrated_in_place(pg_database: str) -> None:
    with StateStore(pg_database):
        pass
    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:  # the schema as earlier versions created it
        conn.exec_driver_sql("ALTER TABLE connectif_sync_state ALTER COLUMN key TYPE varchar(1000)")
        conn.exec_driver_sql("ALTER TABLE connectif_sync_pending ALTER COLUMN key TYPE varchar(1000)")
        conn.exec_driver_sql("ALTER TABLE connectif_sync_files DROP COLUMN unconfirmed_reason")
        conn.exec_driver_sql(
            "INSERT INTO connectif_sync_state (object, key, key_hash, row_hash, confirmed_at) "
            "VALUES ('contacts', 'kept@example.com', 1, 2, now())"
        )
    clear_schema_mark(pg_database)  # earlier versions wrote no schema mark
    with StateStore(pg_database) as store:
        assert store.confirmed("contacts") == {"kept@example.com": 2}
    with engine.connect() as conn:
        types = dict(
            conn.exec_driver_sql(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                "WHERE column_name IN ('key', 'unconfirmed_reason')"
            ).all()
        )
    engine.dispose()
    assert types["connectif_sync_state.key"] == "text"
    assert types["connectif_sync_pending.key"] == "text"
    assert types["connectif_sync_files.unconfirmed_reason"] == "text"


# ------------------------------------------------------------------------------------------- case 7


@pytest.mark.parametrize("report", ["missing", "short"])
def test_no_confirmation_without_a_complete_error_report(
    report: str, erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    too_long = "a" * 60 + "@" + ".".join(["b" * 60] * 19) + ".com"  # Connectif rejects these two rows
    sql(erp, "UPDATE customers SET email = ? WHERE id = 2", too_long)
    sql(erp, "UPDATE customers SET email = ? WHERE id = 3", "z" + too_long)
    emulator.admin.faults(error_report=report)

    result, summaries, outcomes = sync("contacts", erp, state_url, tmp_path / "out1", conn_id)

    (summary,) = summaries
    assert summary["errors"] == 2 and summary["report_complete"] is False
    assert len(summary["rejected_rows"]) == (0 if report == "missing" else 1)
    (outcome,) = outcomes
    assert outcome["confirmed"] == 0 and outcome["unconfirmed"] == CONTACTS
    with StateStore(state_url) as store:
        assert store.confirmed("contacts") == {}  # nothing assumed: every row goes again
        (file,) = store.files("contacts")
        assert file["status"] == "pending" and "error report" in file["unconfirmed_reason"]

    emulator.admin.faults()
    result, summaries, outcomes = sync("contacts", erp, state_url, tmp_path / "out2", conn_id)

    assert result.report.sent == CONTACTS
    assert outcomes[0]["confirmed"] == CONTACTS - 2 and outcomes[0]["failed"] == 2
    with StateStore(state_url) as store:
        assert len(store.confirmed("contacts")) == CONTACTS - 2
        assert {p["key"] for p in store.pending("contacts")} == {too_long, "z" + too_long}


# ------------------------------------------------------------------------------------------- case 8


def test_emails_in_two_unicode_forms_are_one_contact(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    sql(erp, "UPDATE customers SET email = ? WHERE id = 4", "jos\u00e9@example.com")  # NFC
    sql(erp, "UPDATE customers SET email = ? WHERE id = 6", "JOSE\u0301@example.com")  # NFD, upper case

    result, _, _ = sync("contacts", erp, state_url, tmp_path / "out", conn_id)

    assert result.report.duplicate == 1
    (dup,) = rejected(state_url, "contacts")
    assert (dup["source_ref"], dup["key"]) == ("id=6", "jos\u00e9@example.com")
    emails = [c["_email"] for c in emulator.admin.contacts()]
    assert "jos\u00e9@example.com" in emails and len(emails) == CONTACTS - 1


def test_product_ids_are_trimmed(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    sql(erp, "UPDATE products SET sku = ' DUP-SKU ' WHERE id = 1")
    sql(erp, "UPDATE products SET sku = 'DUP-SKU' WHERE id = 5")

    result, _, _ = sync("products", erp, state_url, tmp_path / "out", conn_id)

    assert result.report.duplicate == 1
    assert [(r["source_ref"], r["key"]) for r in rejected(state_url, "products")] == [("id=5", "DUP-SKU")]
    ids = [p["productId"] for p in emulator.admin.products()]
    assert "DUP-SKU" in ids and " DUP-SKU " not in ids and len(ids) == PRODUCTS - 1


def test_a_mapped_column_missing_from_the_table_is_a_mapping_error(erp: str, tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "include/connectif_sync/mappings/contacts.yaml"
    mine = tmp_path / "contacts.yaml"
    mine.write_text(shipped.read_text().replace("column: last_name", "column: surname"))

    with pytest.raises(MappingError) as info:
        run_sync("contacts", erp, tmp_path / "out", state_url=f"sqlite:///{tmp_path / 's.db'}", mapping=mine)

    text = str(info.value)
    assert str(mine) in text and "fields._surname.column" in text and "'surname'" in text
    assert "last_name" in text and "Fix:" in text


# ------------------------------------------------------------------------------------------- case 6

KILLABLE_IMPORT = """
import json, sys
from pathlib import Path

from connectif_provider.operators.connectif import ConnectifImportOperator
from connectif_sync.state import StateStore


class FileStore:
    '''task_state_store kept in a JSON file, so that it outlives this process as Airflow's does.'''

    def __init__(self, path):
        self.path = Path(path)

    def get(self, key, default=None):
        return (json.loads(self.path.read_text()) if self.path.exists() else {}).get(key, default)

    def set(self, key, value, **_):
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        data[key] = value
        self.path.write_text(json.dumps(data))


file_path, store_path, conn_id, obj, ledger = sys.argv[1:6]
ConnectifImportOperator(
    task_id="import_file", file_path=file_path, import_type=obj, override_existing=True,
    connectif_conn_id=conn_id, poll_interval=0.2, deferrable=False,
    upload_ledger=(lambda: StateStore(ledger)) if ledger != "-" else None,
).execute({"task_state_store": FileStore(store_path)})
"""


def killed_while_waiting_for_the_answer(
    emulator: RunningEmulator, tmp_path: Path, conn_id: str, file_path: str, ledger: str | None
) -> Path:
    """Upload ``file_path`` from a worker process that is killed while Connectif holds the answer back
    (the import exists, the worker never learns its id). Returns the file of its task_state_store."""
    import json
    import os
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[2]
    script = tmp_path / "killable_import.py"
    script.write_text(KILLABLE_IMPORT)
    store = tmp_path / f"task_state_store_{time.monotonic_ns()}.json"
    before = len(emulator.admin.imports())
    emulator.admin.faults(hold_import_answers=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(repo / p) for p in ("plugins", "include", "."))}
    proc = subprocess.Popen(
        [sys.executable, str(script), file_path, str(store), conn_id, "contacts", ledger or "-"], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while len(emulator.admin.imports()) == before:
            assert proc.poll() is None, "the worker ended before it was killed"
            assert time.monotonic() < deadline, "the held upload never created an import"
            time.sleep(0.2)
        intent = json.loads(store.read_text())["connectif_import"]
        assert intent["upload_started"] and "import_id" not in intent  # recorded before, never completed
    finally:
        proc.kill()
        proc.wait()
        emulator.admin.faults()
    return store


def test_a_retry_after_a_kill_mid_answer_reattaches_without_uploading(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    import json

    result = run_sync("contacts", erp, tmp_path / "out", state_url=state_url)
    (path,) = [f.path for f in result.files]
    saved = killed_while_waiting_for_the_answer(emulator, tmp_path, conn_id, path, None)
    (created,) = emulator.admin.imports()

    # Airflow retries the task: same task_state_store, a new process, no upload ledger needed.
    summary = operator(conn_id, path, "contacts").execute(
        {"task_state_store": DictStore(json.loads(saved.read_text()))}
    )

    assert summary["import_id"] == created["id"]
    assert len(emulator.admin.imports()) == 1
    with StateStore(state_url) as store:
        assert store.confirm_import(summary)["confirmed"] == CONTACTS
    assert len(emulator.admin.contacts()) == CONTACTS


def test_a_new_run_reattaches_to_the_import_an_earlier_killed_run_made(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    first = run_sync("contacts", erp, tmp_path / "run1", state_url=state_url)
    killed_while_waiting_for_the_answer(emulator, tmp_path, conn_id, first.files[0].path, state_url)

    # The whole run is started again: a new extract supersedes the unconfirmed file, writes the same rows.
    result, summaries, outcomes = sync("contacts", erp, state_url, tmp_path / "run2", conn_id)

    assert result.report.sent == CONTACTS
    (created,) = emulator.admin.imports()
    assert [s["import_id"] for s in summaries] == [created["id"]]
    assert outcomes[0]["confirmed"] == CONTACTS
    result, summaries, _ = sync("contacts", erp, state_url, tmp_path / "run3", conn_id)
    assert result.report.sent == 0 and summaries == [] and len(emulator.admin.imports()) == 1


def test_a_new_run_reattaches_to_a_known_import_whose_rows_were_never_confirmed(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    first = run_sync("contacts", erp, tmp_path / "run1", state_url=state_url)
    done = operator(conn_id, first.files[0].path, "contacts", state_url).execute({"task_state_store": DictStore()})
    # ... and the run died before its report task confirmed anything.

    _, summaries, outcomes = sync("contacts", erp, state_url, tmp_path / "run2", conn_id)

    assert [s["import_id"] for s in summaries] == [done["import_id"]]
    assert len(emulator.admin.imports()) == 1 and outcomes[0]["confirmed"] == CONTACTS


def test_no_reattachment_past_a_later_upload_of_the_same_rows(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    """Run 1 uploads A (unconfirmed), run 2 uploads A' (one row changed, unconfirmed), the row is changed
    back: run 3's file equals run 1's, but re-attaching to run 1's import would confirm A while Connectif
    holds A'. It must upload again."""
    first = run_sync("contacts", erp, tmp_path / "run1", state_url=state_url)
    operator(conn_id, first.files[0].path, "contacts", state_url).execute({"task_state_store": DictStore()})
    (name,) = [r["first_name"] for r in erp_rows(erp, "SELECT first_name FROM customers WHERE id = 1")]
    sql(erp, "UPDATE customers SET first_name = 'Changed' WHERE id = 1")
    second = run_sync("contacts", erp, tmp_path / "run2", state_url=state_url)
    operator(conn_id, second.files[0].path, "contacts", state_url).execute({"task_state_store": DictStore()})
    sql(erp, "UPDATE customers SET first_name = ? WHERE id = 1", name)

    _, _, outcomes = sync("contacts", erp, state_url, tmp_path / "run3", conn_id)

    assert len(emulator.admin.imports()) == 3 and outcomes[0]["confirmed"] == CONTACTS
    (email,) = [r["email"].strip().lower() for r in erp_rows(erp, "SELECT email FROM customers WHERE id = 1")]
    assert {c["_email"]: c for c in emulator.admin.contacts()}[email]["_name"] == name


def test_a_retry_without_its_task_state_store_reattaches_through_the_ledger(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    result = run_sync("contacts", erp, tmp_path / "out", state_url=state_url)
    path = result.files[0].path
    first = operator(conn_id, path, "contacts", state_url).execute({"task_state_store": DictStore()})

    again = operator(conn_id, path, "contacts", state_url).execute({"task_state_store": DictStore()})

    assert again["import_id"] == first["import_id"] and len(emulator.admin.imports()) == 1


def test_invalid_utf8_found_by_a_probed_full_scan(
    erp: str, state_url: str, tmp_path: Path, conn_id: str, emulator: RunningEmulator
) -> None:
    """A second full scan of a SQLite table reads most rows' source hash only (the probe); a row broken
    since is read in full and set aside like in any other run."""
    sync("contacts", erp, state_url, tmp_path / "out1", conn_id)
    sql(erp, "UPDATE customers SET first_name = CAST(x'41ff' AS TEXT) WHERE id = 3")
    sql(erp, "UPDATE customers SET last_name = x'4a6fff00' WHERE id = 30")

    result, summaries, _ = sync("contacts", erp, state_url, tmp_path / "out2", conn_id)

    assert result.report.invalid == 2 and result.report.unchanged == CONTACTS - 2 and result.report.sent == 0
    assert {r["source_ref"] for r in rejected(state_url, "contacts")} == {"id=3", "id=30"}
    assert summaries == []


def test_purchases_with_bytes_that_are_not_utf8_are_set_aside(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    generate(url, contacts=30, products=8, orders=20, coupons=0, coupon_sets=1, dirty_rate=0, seed=3, order_days=3650)
    (broken,) = erp_rows(url, "SELECT id, order_number FROM orders WHERE status = 'paid' ORDER BY id LIMIT 1")
    sql(url, "UPDATE orders SET payment_method = x'4aff' WHERE id = ?", broken["id"])
    paid = {r["order_number"] for r in erp_rows(url, "SELECT order_number FROM orders WHERE status = 'paid'")}

    batch = PurchaseBatch(url, None, None, state_url=f"sqlite:///{tmp_path / 's.db'}")
    sent = {p["purchaseId"] for p in batch}

    assert sent == paid - {broken["order_number"]}
    assert batch.rejected  # one entry per line of the order
    assert {(r["key"], r["field"], r["reason"]) for r in batch.rejected} == {
        (broken["order_number"], "paymentMethod", BAD_UTF8_REASON)
    }


def test_sqlite_store_of_an_earlier_version_gains_the_new_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    with StateStore(url):
        pass
    sql(url, "ALTER TABLE connectif_sync_files DROP COLUMN unconfirmed_reason")
    sql(url, "DROP TABLE connectif_sync_uploads")
    sql(url, "ALTER TABLE connectif_sync_state DROP COLUMN empty_mask")
    clear_schema_mark(url)  # earlier versions wrote no schema mark
    sql(url, "INSERT INTO connectif_sync_state VALUES ('contacts', 'kept@example.com', 1, 2, NULL, NULL, '2026-01-01')")

    with StateStore(url) as store:
        assert store.confirmed("contacts") == {"kept@example.com": 2}
        assert store.files("contacts") == [] and store.uploads() == []
    with sqlite3.connect(tmp_path / "old.sqlite") as conn:
        assert "unconfirmed_reason" in {r[1] for r in conn.execute("PRAGMA table_info(connectif_sync_files)")}
