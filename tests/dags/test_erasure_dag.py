"""``connectif_contact_erasure`` end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

import sqlalchemy as sa

from connectif_sync.state import StateStore
from tests.fixtures.dags import DagSandbox
from tests.fixtures.sql import query


def requests(sandbox: DagSandbox) -> list[dict[str, object]]:
    return query(sandbox.erp_url, "SELECT * FROM erasure_requests ORDER BY id")


def test_erasure_deletes_pending_contacts_records_done_and_keeps_bad_requests(dag_sandbox: DagSandbox) -> None:
    engine = sa.create_engine(dag_sandbox.erp_url)
    with engine.begin() as conn:  # one request a human typed wrong: it must stay pending, reported
        conn.execute(
            sa.text("INSERT INTO erasure_requests VALUES (999, 'not an email', '2026-03-01 00:00:00', NULL, 'x')")
        )
    engine.dispose()
    before = requests(dag_sandbox)
    pending = [r for r in before if r["done_at"] is None and r["id"] != 999]
    emails = {str(r["email"]).strip().lower() for r in pending}
    keep = "someone.else@example.com"
    dag_sandbox.emulator.admin.seed_contacts(
        [{"_email": e} for e in sorted(emails - {"nobody.at.all@example.com"})] + [{"_email": keep}]
    )

    state, summary = dag_sandbox.run("connectif_contact_erasure")

    assert state == "success", summary
    assert {c["_email"] for c in dag_sandbox.emulator.admin.contacts()} == {keep}
    after = {r["id"]: r for r in requests(dag_sandbox)}
    assert all(after[r["id"]]["done_at"] is not None for r in pending)
    assert after[999]["done_at"] is None
    for r in before:  # requests done earlier keep their date
        if r["done_at"] is not None:
            assert after[r["id"]]["done_at"] == r["done_at"]
    assert summary["deleted"] == len(emails) - 1
    assert summary["absent"] >= 1  # nobody.at.all@example.com: not in Connectif, counts as done
    assert summary["rejected"] == 1
    with StateStore(dag_sandbox.state_url) as store:
        rejected = store.rejected("erasure")
        suppressed = {s["key"]: s["reason"] for s in store.suppressed("contacts")}
    assert [(r["source_ref"], r["reason"]) for r in rejected] == [("id=999", "invalid email address")]
    assert suppressed == {str(r["email"]).strip().lower(): f"erasure request id={r['id']}" for r in pending}

    # The ERP still has (some of) those customers: the contacts sync must not create them again.
    engine = sa.create_engine(dag_sandbox.erp_url)
    with engine.begin() as conn:
        customers = {str(e).strip().lower() for (e,) in conn.execute(sa.text("SELECT email FROM customers")) if e}
    engine.dispose()
    assert emails & customers
    state, contacts = dag_sandbox.run("connectif_contacts")
    assert state == "success", contacts
    synced = {c["_email"] for c in dag_sandbox.emulator.admin.contacts()}
    assert synced and not synced & emails
    assert contacts["suppressed"] == len(emails & customers)  # reported in the run summary

    state, summary = dag_sandbox.run("connectif_contact_erasure")

    assert state == "success"
    assert summary["to_delete"] == 0
    assert summary["sent"] == 0


def test_erasure_dry_run_deletes_nothing(dag_sandbox: DagSandbox) -> None:
    dag_sandbox.emulator.admin.seed_contacts([{"_email": "a@example.com"}])
    before = requests(dag_sandbox)

    state, summary = dag_sandbox.run("connectif_contact_erasure", dry_run=True)

    assert state == "success"
    assert summary["to_delete"] > 0
    assert len(dag_sandbox.emulator.admin.contacts()) == 1
    assert requests(dag_sandbox) == before
