"""``connectif_exports`` end to end against the emulator: contacts and the window's activities land in the
warehouse, a re-run replaces its window instead of duplicating it, a dry run creates nothing."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from tests.fixtures.dags import DagSandbox
from tests.fixtures.sql import query


def table_rows(url: str, table: str) -> list[dict[str, object]]:
    return query(url, f'SELECT * FROM "{table}"')


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


def test_a_backfill_of_past_weeks_fills_each_week_once(dag_sandbox: DagSandbox) -> None:
    """What a backfill does (one run per past week): each week's activities land in that week's window;
    running a week again replaces only that week."""
    admin = dag_sandbox.emulator.admin
    admin.seed_contacts([{"_email": f"c{i}@example.com"} for i in range(3)])
    weeks = [dag_sandbox.now - timedelta(days=14), dag_sandbox.now - timedelta(days=7)]  # logical dates = window ends
    admin.seed_activities(
        [
            {"contactEmail": "c1@example.com", "type": "login", "date": (weeks[0] - timedelta(days=3)).isoformat()},
            {"contactEmail": "c2@example.com", "type": "login", "date": (weeks[1] - timedelta(days=3)).isoformat()},
        ]
    )

    # dry_run=False explicitly: in the session's shared DAG bag, an earlier test's dry_run=True conf outlives
    # its dag.test() run (seen when this file runs in order).
    for week in [*weeks, weeks[0]]:  # both weeks, then the first one again
        state, summary = dag_sandbox.run("connectif_exports", logical_date=week, dry_run=False)
        assert state == "success", summary

    activities = table_rows(dag_sandbox.warehouse_url, "connectif_activities")
    assert len(activities) == 2, activities
    windows = sorted({(str(a["etl_window_start"]), str(a["etl_window_end"])) for a in activities})
    assert len(windows) == 2, windows  # one activity per week, each in its own window
    emails = {next(v for v in a.values() if isinstance(v, str) and v.endswith("@example.com")) for a in activities}
    assert emails == {"c1@example.com", "c2@example.com"}
