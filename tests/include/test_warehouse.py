"""Loading export CSVs into warehouse tables: window replacement, schema growth, bad files, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectif_sync.warehouse import (
    WarehouseLoadError,
    Window,
    load_export_files,
    table_for_export_file,
    window_row_counts,
)

W1 = Window(datetime(2026, 11, 9, tzinfo=UTC), datetime(2026, 11, 16, tzinfo=UTC))
W2 = Window(datetime(2026, 11, 16, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC))


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'wh.sqlite'}")
    yield eng
    eng.dispose()


def write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def rows(engine: sa.Engine, table: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        result = conn.execute(sa.text(f'SELECT * FROM "{table}" ORDER BY 1, 2'))
        return [dict(r._mapping) for r in result]


def test_load_keeps_values_as_text_strips_bom_and_stamps_the_window(engine: sa.Engine, tmp_path: Path) -> None:
    csv = write(
        tmp_path / "c.csv", '_email,_points,note\na@x.com,007,"line1\nline2"\nb@x.com,,"comma, inside"\n', bom=True
    )

    counts = load_export_files(engine, {"connectif_contacts": csv}, W1)

    assert counts == {"connectif_contacts": 2}
    got = rows(engine, "connectif_contacts")
    assert [(r["_email"], r["_points"], r["note"]) for r in got] == [
        ("a@x.com", "007", "line1\nline2"),
        ("b@x.com", None, "comma, inside"),
    ]
    assert all(str(r["etl_window_start"]).startswith("2026-11-09") for r in got)


def test_reloading_a_window_replaces_only_that_window(engine: sa.Engine, tmp_path: Path) -> None:
    first = write(tmp_path / "a1.csv", "id,type\n1,purchase\n2,login\n")
    other = write(tmp_path / "a2.csv", "id,type\n3,purchase\n")
    load_export_files(engine, {"acts": first}, W1)
    load_export_files(engine, {"acts": other}, W2)

    rerun = write(tmp_path / "a1b.csv", "id,type\n1,purchase\n2,login\n4,register\n")
    load_export_files(engine, {"acts": rerun}, W1)
    load_export_files(engine, {"acts": rerun}, W1)

    assert sorted(r["id"] for r in rows(engine, "acts")) == ["1", "2", "3", "4"]
    counts = window_row_counts(engine, "acts")
    assert sorted(counts.values()) == [1, 3]


def test_same_window_given_in_another_timezone_is_the_same_window(engine: sa.Engine, tmp_path: Path) -> None:
    csv = write(tmp_path / "a.csv", "id\n1\n")
    madrid = timezone(timedelta(hours=1))
    load_export_files(engine, {"acts": csv}, W1)
    load_export_files(engine, {"acts": csv}, Window(W1.start.astimezone(madrid), W1.end.astimezone(madrid)))
    assert len(rows(engine, "acts")) == 1


def test_a_new_column_in_a_later_export_is_added(engine: sa.Engine, tmp_path: Path) -> None:
    load_export_files(engine, {"c": write(tmp_path / "1.csv", "_email\na@x.com\n")}, W1)
    load_export_files(engine, {"c": write(tmp_path / "2.csv", "_email,vip\nb@x.com,yes\n")}, W2)

    got = {r["_email"]: r["vip"] for r in rows(engine, "c")}
    assert got == {"a@x.com": None, "b@x.com": "yes"}


def test_several_tables_load_in_one_transaction(engine: sa.Engine, tmp_path: Path) -> None:
    good = write(tmp_path / "acts.csv", "id\n1\n")
    load_export_files(engine, {"acts": good}, W1)
    ragged = write(tmp_path / "prods.csv", "id,productId\n1,p1\n2,p2,EXTRA\n")

    with pytest.raises(WarehouseLoadError, match=r"prods\.csv: malformed CSV"):
        load_export_files(engine, {"acts": write(tmp_path / "acts2.csv", "id\n9\n8\n"), "prods": ragged}, W1)

    assert [r["id"] for r in rows(engine, "acts")] == ["1"]  # the previous load of the window is intact
    assert not sa.inspect(engine).has_table("prods")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"id,\n1,2\n", "have no name"),
        (b"id,id\n1,2\n", "duplicate header"),
        (b"etl_window_start\n1\n", "reserved"),
        (b"id\n\xff\xfe\n", "not UTF-8|malformed"),
    ],
)
def test_bad_files_are_refused_with_the_file_named(
    engine: sa.Engine, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(WarehouseLoadError, match=message) as err:
        load_export_files(engine, {"t": path}, W1)
    assert "bad.csv" in str(err.value)


def test_window_must_be_aware_and_ordered() -> None:
    with pytest.raises(WarehouseLoadError, match="timezone-aware"):
        Window(datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(WarehouseLoadError, match="not after"):
        Window(W1.end, W1.start)


def test_unsafe_table_names_are_refused(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(WarehouseLoadError, match="unsafe warehouse table name"):
        load_export_files(engine, {"x; DROP TABLE y": write(tmp_path / "a.csv", "id\n1\n")}, W1)


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("export-activities-1f2e.csv", "connectif_activities"),
        ("export-activities-1f2e-products.csv", "connectif_activity_products"),
        ("export-contacts-9a.csv", "connectif_contacts"),
        ("export-data-explorer-3.csv", "connectif_data_explorer"),
    ],
)
def test_export_files_map_to_tables(name: str, table: str) -> None:
    assert table_for_export_file(f"/tmp/x/{name}") == table


def test_unknown_export_file_is_refused() -> None:
    with pytest.raises(WarehouseLoadError, match="cannot tell"):
        table_for_export_file("readme.csv")
    with pytest.raises(WarehouseLoadError, match="not a CSV"):
        table_for_export_file("export-contacts.zip")


def test_several_files_of_one_table_load_together_and_replace_together(engine: sa.Engine, tmp_path: Path) -> None:
    part1 = write(tmp_path / "p1.csv", "id,type\n1,purchase\n")
    part2 = write(tmp_path / "p2.csv", "id,type,extra\n2,login,x\n", bom=True)

    assert load_export_files(engine, {"acts": [part1, part2]}, W1) == {"acts": 2}
    assert load_export_files(engine, {"acts": [part1, part2]}, W1) == {"acts": 2}

    assert sorted((r["id"], r["extra"]) for r in rows(engine, "acts")) == [("1", None), ("2", "x")]


def test_export_results_group_their_files_by_table_and_skipped_tasks_add_none() -> None:
    from connectif_sync.warehouse import files_by_table

    results = [
        {"files": ["/d/contacts/export-contacts-1.csv"]},
        None,  # a skipped export task pushed nothing
        {"files": ["/d/a/export-activities-2.csv", "/d/a/export-activities-2-products.csv",
                   "/d/a/export-activities-3.csv"]},
    ]  # fmt: skip

    assert files_by_table(results) == {
        "connectif_contacts": ["/d/contacts/export-contacts-1.csv"],
        "connectif_activities": ["/d/a/export-activities-2.csv", "/d/a/export-activities-3.csv"],
        "connectif_activity_products": ["/d/a/export-activities-2-products.csv"],
    }
    assert files_by_table([{}, None]) == {}


def test_an_export_plan_round_trips_and_its_summaries_say_what_was_loaded_or_would_be() -> None:
    from connectif_sync.contract import RunState
    from connectif_sync.warehouse import ExportPlan, exports_summary

    plan = ExportPlan(W1.start.isoformat(), W1.end.isoformat(), exports=2, output_dir="/w/run", dry_run=False)
    assert ExportPlan.from_dict(plan.as_dict()) == plan and plan.window == W1

    done = exports_summary("connectif_exports", "r1", plan, {"connectif_contacts": 5, "connectif_activities": 2})
    assert (done.state, done.extracted, done.dry_run) == (RunState.SUCCESS, 7, False)
    assert done.notes == ["connectif_activities: 2 rows", "connectif_contacts: 5 rows"]
    assert done.as_dict()["tables"] == {"connectif_contacts": 5, "connectif_activities": 2}
    assert done.as_dict()["window"] == {"from": "2026-11-09T00:00:00+00:00", "to": "2026-11-16T00:00:00+00:00"}

    dry = ExportPlan(plan.from_date, plan.to_date, exports=3, output_dir="", dry_run=True)
    planned = exports_summary("connectif_exports", "r2", dry, None)
    assert (planned.state, planned.dry_run, planned.api_requests) == (RunState.PLANNED, True, 9)
    assert planned.plan == {"exports": 3, "api_requests": 9} and planned.as_dict()["exports"] == 3


def test_new_columns_with_any_name_are_added_in_a_postgresql_schema(pg_database: str, tmp_path: Path) -> None:
    """The added column is quoted by the dialect: a custom field's name with spaces, quotes or capitals."""
    engine = sa.create_engine(pg_database)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA wh")
        load_export_files(engine, {"c": write(tmp_path / "1.csv", "_email\na@x.com\n")}, W1, schema="wh")
        odd = 'Loyalty "Tier" 2'
        header = '_email,"Loyalty ""Tier"" 2"'  # CSV quoting of the name above
        load_export_files(engine, {"c": write(tmp_path / "2.csv", f"{header}\nb@x.com,gold\n")}, W2, schema="wh")

        with engine.connect() as conn:
            got = {r["_email"]: r[odd] for r in conn.execute(sa.text('SELECT * FROM wh."c"')).mappings()}
        assert got == {"a@x.com": None, "b@x.com": "gold"}
    finally:
        engine.dispose()
