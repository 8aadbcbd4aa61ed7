"""A row Connectif rejects in an import shows by its key: in the run's summary (the run tab) and with the run's
other rejected rows (the rejected-rows page and ``rejected.csv``), once the run's chunk files are gone."""

from __future__ import annotations

import json

import sqlalchemy as sa

from connectif_sync.state import StateStore
from tests.fixtures.dags import DagSandbox


def test_rows_connectif_rejected_are_kept_by_key(dag_sandbox: DagSandbox) -> None:
    too_long = "a" * 60 + "@" + ".".join(["b" * 60] * 19) + ".com"  # we accept it, Connectif rejects it
    engine = sa.create_engine(dag_sandbox.erp_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET email = :e WHERE id = 1"), {"e": too_long})
    engine.dispose()

    state, summary = dag_sandbox.run("connectif_contacts")

    assert state == "success", json.dumps(summary)
    assert summary["rejected_by_connectif"] == 1
    (refused,) = [r for o in summary["import_outcomes"] for r in o["rejected_rows"]]
    assert refused["key"] == too_long and refused["field"] == "_email" and refused["line"] >= 1
    with StateStore(dag_sandbox.state_url, readonly=True) as store:
        rows = store.rejected("contacts", summary["library_run_id"], limit=100_000)
        pending = store.pending("contacts")
    # every rejected row of the run, ours and Connectif's, is listed: as many as the summary's "rejected"
    assert len(rows) == summary["rejected"]
    (connectif,) = [r for r in rows if r["reason"].startswith("Connectif:")]
    assert connectif["key"] == too_long and connectif["field"] == "_email" and connectif["value"] == too_long
    assert connectif["source_ref"] == f"contacts-0001.csv line {refused['line']}"
    assert connectif["reason"] in summary["rejected_by_reason"]
    assert [p["key"] for p in pending] == [too_long]  # and it waits to be sent again
