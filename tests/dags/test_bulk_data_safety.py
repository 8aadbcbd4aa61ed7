"""The bulk sync DAG's ``report`` task under failure: it always publishes a summary, and it never confirms
rows that Connectif's answer does not prove (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectif_sync.state import StateStore
from tests.fixtures.dags import REPO, DagSandbox


def test_report_publishes_a_summary_when_extract_fails(
    dag_sandbox: DagSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    shipped = (REPO / "include/connectif_sync/mappings/contacts.yaml").read_text()
    (mappings / "contacts.yaml").write_text(shipped.replace("column: last_name", "column: surname"))
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_MAPPINGS_DIR", str(mappings))

    state, summary = dag_sandbox.run("connectif_contacts")

    assert state == "failed"
    assert summary["failed"] == "extract" and summary["sent"] == 0 and summary["imports"] == 0
    assert "extract failed" in summary["notes"][0]
    assert dag_sandbox.emulator.admin.imports() == []


def test_a_missing_error_report_confirms_nothing_and_says_so(dag_sandbox: DagSandbox) -> None:
    too_long = "a" * 60 + "@" + ".".join(["b" * 60] * 19) + ".com"  # we accept it, Connectif rejects it
    engine = sa.create_engine(dag_sandbox.erp_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET email = :e WHERE id = 1"), {"e": too_long})
    engine.dispose()
    dag_sandbox.emulator.admin.faults(error_report="missing")

    state, summary = dag_sandbox.run("connectif_contacts")

    assert state == "failed", json.dumps(summary)  # after publishing the summary
    assert summary["sent"] == 0 and summary["unconfirmed"] == summary["to_send"] > 0
    assert any("error report is missing or incomplete" in n for n in summary["notes"])
    with StateStore(dag_sandbox.state_url) as store:
        assert store.confirmed("contacts") == {}
        assert [f["status"] for f in store.files("contacts")] == ["pending"]

    dag_sandbox.emulator.admin.faults()
    state, summary = dag_sandbox.run("connectif_contacts")  # the next run sends the rows again, from one import

    assert state == "success", summary
    assert summary["sent"] > 0 and summary["unconfirmed"] == 0 and summary["rejected_by_connectif"] == 1
    assert len(dag_sandbox.emulator.admin.imports()) == 1  # re-attached to the first run's import


@pytest.mark.parametrize(("dag_id", "failing"), [("connectif_purchases", "send"), ("connectif_coupons", "plan")])
def test_other_reports_publish_a_summary_when_their_work_failed(
    dag_id: str, failing: str, dag_sandbox: DagSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_CONNECTIF_MAPPINGS_DIR", str(tmp_path / "no-such-folder"))  # the task fails

    state, summary = dag_sandbox.run(dag_id)

    assert state == "failed"
    assert summary["failed"] == failing and summary["sent"] == 0
    assert f"{failing} failed" in summary["notes"][0]
