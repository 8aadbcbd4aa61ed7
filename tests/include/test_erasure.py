"""Erasure requests: pending ones oldest first, done_at recorded once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectif_sync.erasure import ErasureTable, mark_erasures_done, pending_erasures
from emulator.testing import RunningEmulator


@pytest.fixture
def erp(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'erp.sqlite'}")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE erasure_requests (id INTEGER PRIMARY KEY, email VARCHAR(400) NOT NULL, "
                "requested_at DATETIME NOT NULL, done_at DATETIME, note VARCHAR(200))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO erasure_requests VALUES "
                "(1, ' Ana@Example.COM ', '2026-01-03 10:00:00', NULL, 'x'),"
                "(2, 'luis@example.com', '2026-01-01 09:00:00', NULL, 'x'),"
                "(3, 'done@example.com', '2026-01-01 08:00:00', '2026-01-02 00:00:00', 'x')"
            )
        )
    yield engine
    engine.dispose()


def test_pending_requests_oldest_first_with_email_as_typed(erp: sa.Engine) -> None:
    pending = pending_erasures(erp)
    assert [(r.id, r.email) for r in pending] == [(2, "luis@example.com"), (1, " Ana@Example.COM ")]
    assert pending[0].requested_at == datetime(2026, 1, 1, 9, 0)
    assert [r.id for r in pending_erasures(erp, limit=1)] == [2]


def test_mark_done_records_the_first_date_only(erp: sa.Engine) -> None:
    assert mark_erasures_done(erp, [1, 3], when=datetime(2026, 1, 5, 12, tzinfo=UTC)) == 1
    assert mark_erasures_done(erp, [1], when=datetime(2026, 2, 1, tzinfo=UTC)) == 0
    assert mark_erasures_done(erp, []) == 0
    assert [r.id for r in pending_erasures(erp)] == [2]
    with erp.connect() as conn:
        done = dict(conn.execute(sa.text("SELECT id, done_at FROM erasure_requests")).all())
    assert str(done[1]).startswith("2026-01-05 12:00:00")
    assert str(done[3]).startswith("2026-01-02 00:00:00")


def test_custom_table_description(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE gdpr (rid INTEGER, mail TEXT, asked TIMESTAMP, erased TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO gdpr VALUES (9, 'z@example.com', '2026-01-01 00:00:00', NULL)"))
    table = ErasureTable(
        table="gdpr", id_column="rid", email_column="mail", requested_at_column="asked", done_at_column="erased"
    )
    assert [r.email for r in pending_erasures(engine, table=table)] == ["z@example.com"]
    assert mark_erasures_done(engine, [9], table=table) == 1
    assert pending_erasures(engine, table=table) == []
    engine.dispose()


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_a_retry_counts_a_contact_deleted_by_the_failed_try_as_deleted(
    tmp_path: Path,
    emulator: RunningEmulator,
    connectif_conn: Callable[..., str],
    request: pytest.FixtureRequest,
    store_kind: str,
) -> None:
    """The ERP refuses the ``done_at`` write (``database is locked``) right after the third deletion: the
    first try fails with two requests done and the third contact deleted in Connectif but its request still
    pending. The retry's delete of that contact answers 404; it must count as deleted, not as absent, and
    the run's counts must include what the first try finished."""
    from connectif_provider.hooks.connectif import ConnectifHook
    from connectif_sync.erasure import erase_contacts
    from connectif_sync.state import StateStore

    url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    setup = sa.create_engine(url)
    with setup.begin() as conn:
        conn.execute(sa.text("CREATE TABLE erasure_requests (id INTEGER PRIMARY KEY, email VARCHAR(400), "
                             "requested_at DATETIME NOT NULL, done_at DATETIME, note VARCHAR(200))"))  # fmt: skip
        for i in range(1, 6):
            email = f"person{i}@example.com" if i < 5 else "nobody@example.com"
            conn.execute(
                sa.text("INSERT INTO erasure_requests VALUES (:i, :e, :r, NULL, 'x')"),
                {"i": i, "e": email, "r": f"2026-01-0{i} 00:00:00"},
            )
    setup.dispose()
    emulator.admin.seed_contacts([{"_email": f"person{i}@example.com"} for i in range(1, 5)])
    hook = ConnectifHook(connectif_conn(emulator.base_url, emulator.api_key, rate_limit_per_minute=100_000))
    erp = sa.create_engine(url, connect_args={"timeout": 0.2})
    other_writer = sa.create_engine(url).connect()
    deleted_in_first_try: list[str] = []

    def delete_then_lock(email: str) -> bool:
        found = hook.delete_contact(email)
        deleted_in_first_try.append(email)
        if len(deleted_in_first_try) == 3:  # another writer takes the ERP's write lock
            other_writer.exec_driver_sql("BEGIN IMMEDIATE")
        return found

    def todo() -> list[tuple[int, str]]:
        return [(r.id, r.email) for r in pending_erasures(erp)]

    sqlite_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    state_url = sqlite_url if store_kind == "sqlite" else str(request.getfixturevalue("pg_database"))
    with StateStore(state_url) as store:
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            erase_contacts(todo(), delete_then_lock, store, erp, run="connectif_contact_erasure/run-1")
        other_writer.exec_driver_sql("ROLLBACK")
        other_writer.close()
        assert [i for i, _ in todo()] == [3, 4, 5]
        assert "person3@example.com" not in {c["_email"] for c in emulator.admin.contacts()}

        counts = erase_contacts(todo(), hook.delete_contact, store, erp, run="connectif_contact_erasure/run-1")

        assert (counts.deleted, counts.absent) == (4, 1)  # person1-4 deleted, nobody@ was never there
        assert counts.deleted_by_earlier_try == 1 and counts.this_try == 3
        assert counts.finished_by_earlier_tries == 2
        assert todo() == []
        assert emulator.admin.contacts() == []
        assert {s["key"] for s in store.suppressed("contacts")} == {
            *(f"person{i}@example.com" for i in range(1, 5)),
            "nobody@example.com",
        }
        # Another run's 404 on a contact it never deleted stays "absent".
        again = erase_contacts([(9, "ghost@example.com")], hook.delete_contact, store, erp, run="other-run")
        assert (again.deleted, again.absent, again.deleted_by_earlier_try) == (0, 1, 0)
    erp.dispose()


def test_planning_normalises_emails_and_sets_bad_requests_aside(erp: sa.Engine) -> None:
    from connectif_sync.erasure import ErasureRequest, plan_erasures

    pending = [*pending_erasures(erp), ErasureRequest(7, "not an email", None), ErasureRequest(8, "  ", None)]

    plan = plan_erasures(pending)

    assert plan.pending == 4
    assert plan.todo == [(2, "luis@example.com"), (1, "ana@example.com")]
    assert [(r["source_ref"], r["field"], r["reason"], r["value"]) for r in plan.invalid] == [
        ("id=7", "email", "invalid email address", "not an email"),
        ("id=8", "email", "empty email", "  "),
    ]
    assert plan_erasures([]).todo == []


def test_a_run_files_its_rejects_erases_and_its_summary_counts_every_try(erp: sa.Engine, tmp_path: Path) -> None:
    from connectif_sync.contract import RunState, SyncObject
    from connectif_sync.erasure import (
        ErasureRequest,
        ErasureResult,
        erasure_summary,
        plan_erasures,
        run_erasures,
    )
    from connectif_sync.state import StateStore

    plan = plan_erasures([*pending_erasures(erp), ErasureRequest(7, "nope", None)])
    in_connectif = {"luis@example.com"}

    with StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}") as store:
        result = run_erasures(
            plan, lambda email: email in in_connectif, store, erp, attempt="dag/run-1/1", run="dag/run-1"
        )
        assert [r["source_ref"] for r in store.rejected("erasure")] == ["id=7"]
        assert {s["key"] for s in store.suppressed("contacts")} == {"luis@example.com", "ana@example.com"}
    assert pending_erasures(erp) == []
    assert (result.deleted, result.absent, result.to_delete, result.library_run_id is not None) == (1, 1, 2, True)
    assert ErasureResult.from_dict(result.as_dict()) == result

    summary = erasure_summary("connectif_contact_erasure", "run-1", result)

    assert (summary.object, summary.state, summary.sent, summary.deleted) == (
        SyncObject.CONTACT_ERASURE, RunState.SUCCESS, 2, 1,
    )  # fmt: skip
    assert summary.rejected_by_reason == {"email: invalid email address": 1}
    assert summary.api_requests == 2 and summary.plan is None
    assert summary.notes == ["request id=7: invalid email address ('nope'), left pending",
                             "1 emails were not in Connectif (counted as done)"]  # fmt: skip
    assert summary.as_dict()["pending"] == 3 and summary.as_dict()["absent"] == 1


def test_a_dry_runs_summary_is_a_plan() -> None:
    from connectif_sync.erasure import ErasureRequest, ErasureResult, erasure_summary, plan_erasures

    plan = plan_erasures([ErasureRequest(i, f"p{i}@example.com", None) for i in range(180)])
    summary = erasure_summary("connectif_contact_erasure", "r", ErasureResult.planned(plan))

    assert summary.dry_run and summary.state == "planned" and summary.sent == 0 and summary.to_send == 180
    assert (
        summary.plan
        == summary.api_requests
        == {"api_requests": 180, "expected_minutes": 2.0, "rate_limit_per_minute": 90}
    )
