"""``connectif_exports`` end to end against the emulator: contacts and the window's activities land in the
warehouse, a re-run replaces its window instead of duplicating it, a dry run creates nothing."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from tests.fixtures.dags import DagSandbox


def table_rows(url: str, table: str) -> list[dict[str, object]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]
    finally:
        engine.dispose()


def test_exports_load_the_window_into_the_warehouse_idempotently(dag_sandbox: DagSandbox) -> None:
    admin = dag_sandbox.emulator.admin
    admin.seed_contacts([{"_email": f"c{i}@example.com", "_name": f"Name {i}"} for i in range(5)])
    inside = (dag_sandbox.now - timedelta(days=2)).isoformat()
    outside = (dag_sandbox.now - timedelta(days=20)).isoformat()
    admin.seed_activities(
        [
            {"contactEmail": "c1@example.com", "type": "login", "date": inside},
            {"contactEmail": "c2@example.com", "type": "email-opened", "date": inside},
            {"contactEmail": "c3@example.com", "type": "login", "date": outside},
        ]
    )

    state, summary = dag_sandbox.run("connectif_exports")

    assert state == "success", summary
    contacts = table_rows(dag_sandbox.warehouse_url, "connectif_contacts")
    activities = table_rows(dag_sandbox.warehouse_url, "connectif_activities")
    assert len(contacts) == 5
    assert len(activities) == 2
    assert summary["tables"]["connectif_contacts"] == 5
    assert summary["tables"]["connectif_activities"] == 2

    state, summary = dag_sandbox.run("connectif_exports")  # same logical date: same window

    assert state == "success"
    assert len(table_rows(dag_sandbox.warehouse_url, "connectif_contacts")) == 5
    assert len(table_rows(dag_sandbox.warehouse_url, "connectif_activities")) == 2
    assert len(admin.exports()) == 4  # two per run


def test_exports_dry_run_creates_nothing(dag_sandbox: DagSandbox) -> None:
    state, summary = dag_sandbox.run("connectif_exports", dry_run=True)

    assert state == "success"
    assert summary["dry_run"] is True
    assert summary["exports"] == 2
    assert dag_sandbox.emulator.admin.exports() == []
    engine = sa.create_engine(dag_sandbox.warehouse_url)
    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()
