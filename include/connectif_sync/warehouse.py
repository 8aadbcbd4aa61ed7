"""Load Connectif export CSVs into warehouse tables through SQLAlchemy, replacing one window per run.

A weekly export run covers a window (its data interval). Every row it loads carries that window in
``etl_window_start``/``etl_window_end``; loading the same window again deletes the window's rows and inserts
the new ones in the same transaction, so a re-run or a backfill never duplicates rows and a failed load
leaves the previous data in place. Columns are kept as text, exactly as Connectif wrote them (the export's
columns depend on the account's custom fields, so the table grows a column when a new one appears).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement

from connectif_sync.contract import RunState, RunSummary, SyncObject

WINDOW_START = "etl_window_start"
WINDOW_END = "etl_window_end"
LOADED_AT = "etl_loaded_at"
META_COLUMNS = (WINDOW_START, WINDOW_END, LOADED_AT)

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: API requests of one export: create it, poll it (at least once), download it.
REQUESTS_PER_EXPORT = 3

#: Table (suffix) that each kind of export file goes to; see :func:`table_for_export_file`.
EXPORT_TABLES = {
    "activities_products": "activity_products",
    "activities": "activities",
    "contacts": "contacts",
    "data_explorer": "data_explorer",
}


class WarehouseLoadError(ValueError):
    """A file that cannot be loaded; the message names the file and what to do."""


@dataclass(frozen=True)
class Window:
    """The half-open time range ``[start, end)`` a load replaces (a DAG run's data interval)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise WarehouseLoadError(f"window bounds must be timezone-aware, got {self.start!r} .. {self.end!r}")
        # Stored in UTC so that the same window compares equal whatever timezone the caller used.
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))
        if self.end <= self.start:
            raise WarehouseLoadError(f"window end {self.end.isoformat()} is not after start {self.start.isoformat()}")


def check_table_name(name: str) -> str:
    """Refuse table names that would need quoting tricks (they come from user configuration)."""
    if not _SAFE_NAME.match(name):
        raise WarehouseLoadError(
            f"unsafe warehouse table name {name!r}: use letters, digits and underscores, starting with a letter"
        )
    return name


def table_for_export_file(path: str | Path, prefix: str = "connectif_") -> str:
    """The warehouse table for a file of an export ZIP, from its name.

    Connectif names them ``export-activities-<uuid>.csv``, ``export-activities-<uuid>-products.csv``,
    ``export-contacts-<uuid>.csv`` and so on.
    """
    name = Path(path).name.lower()
    if not name.endswith(".csv"):
        raise WarehouseLoadError(f"{path}: not a CSV file; an export ZIP holds only CSV files")
    stem = name.removesuffix(".csv")
    if "activities" in stem and stem.endswith("-products"):
        kind = "activities_products"
    elif "activities" in stem:
        kind = "activities"
    elif "contacts" in stem:
        kind = "contacts"
    elif "data-explorer" in stem or "data_explorer" in stem or "report" in stem:
        kind = "data_explorer"
    else:
        raise WarehouseLoadError(
            f"{path}: cannot tell which export this file belongs to (expected 'contacts', 'activities' or "
            "'data-explorer' in its name)"
        )
    return check_table_name(f"{prefix}{EXPORT_TABLES[kind]}")


def _read_chunks(path: Path, delimiter: str, chunk_rows: int) -> tuple[list[str], Iterator[pd.DataFrame]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), None)
    except UnicodeDecodeError as exc:
        raise WarehouseLoadError(f"{path}: not UTF-8 ({exc}); Connectif exports are UTF-8") from exc
    if not header:
        raise WarehouseLoadError(f"{path}: empty file, no header row; re-run the export")
    blank = [i + 1 for i, c in enumerate(header) if not c.strip()]
    if blank:
        raise WarehouseLoadError(f"{path}: header column(s) {blank} have no name")
    if len(set(header)) != len(header):
        raise WarehouseLoadError(f"{path}: duplicate header names {sorted({c for c in header if header.count(c) > 1})}")
    clash = [c for c in header if c in META_COLUMNS]
    if clash:
        raise WarehouseLoadError(f"{path}: columns {clash} are reserved for the load window; rename them")
    chunks = pd.read_csv(
        path,
        sep=delimiter,
        encoding="utf-8-sig",
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        chunksize=chunk_rows,
        on_bad_lines="error",
    )
    return header, chunks


def _ensure_table(conn: Connection, name: str, columns: list[str], schema: str | None) -> sa.Table:
    """Create the table, or add the columns it lacks; returns it reflected."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(name, schema=schema):
        table = sa.Table(
            name,
            sa.MetaData(),
            *(sa.Column(c, sa.Text) for c in columns),
            sa.Column(WINDOW_START, sa.DateTime(timezone=True), nullable=False),
            sa.Column(WINDOW_END, sa.DateTime(timezone=True), nullable=False),
            sa.Column(LOADED_AT, sa.DateTime(timezone=True), nullable=False),
            sa.Index(f"ix_{name}_window"[:63], WINDOW_START, WINDOW_END),
            schema=schema,
        )
        table.create(conn)
        return table
    existing = {c["name"] for c in inspector.get_columns(name, schema=schema)}
    grown = sa.Table(name, sa.MetaData(), *(sa.Column(c, sa.Text) for c in columns if c not in existing), schema=schema)
    for column in grown.columns:
        conn.execute(AddColumn(column))
    return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)


class AddColumn(ExecutableDDLElement):
    """``ALTER TABLE ... ADD COLUMN ...``, quoted by the dialect (SQLAlchemy Core has no such construct)."""

    def __init__(self, column: sa.Column[Any]) -> None:
        self.column = column


@compiles(AddColumn)
def _compile_add_column(element: AddColumn, compiler: Any, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.column.table)
    return " ".join(("ALTER TABLE", table, "ADD COLUMN", compiler.get_column_specification(element.column)))


def _load_one(
    conn: Connection,
    paths: Sequence[Path],
    table_name: str,
    window: Window,
    loaded_at: datetime,
    *,
    schema: str | None,
    delimiter: str,
    chunk_rows: int,
) -> int:
    readers = [(path, *_read_chunks(path, delimiter, chunk_rows)) for path in paths]
    columns = list(dict.fromkeys(c for _, header, _ in readers for c in header))
    table = _ensure_table(conn, check_table_name(table_name), columns, schema)
    conn.execute(table.delete().where(table.c[WINDOW_START] == window.start, table.c[WINDOW_END] == window.end))
    total = 0
    meta = {WINDOW_START: window.start, WINDOW_END: window.end, LOADED_AT: loaded_at}
    for path, _header, chunks in readers:
        rows = 0
        try:
            for chunk in chunks:
                frame = chunk.astype(object).where(chunk.notna(), None)
                records: list[dict[str, Any]] = [
                    {**{str(k): v for k, v in rec.items()}, **meta} for rec in frame.to_dict("records")
                ]
                if records:
                    conn.execute(table.insert(), records)
                    rows += len(records)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise WarehouseLoadError(f"{path}: malformed CSV near data row {rows + 1}: {exc}") from exc
        total += rows
    return total


def load_export_files(
    engine: Engine | str,
    files: Mapping[str, str | Path | Sequence[str | Path]],
    window: Window,
    *,
    schema: str | None = None,
    delimiter: str = ",",
    chunk_rows: int = 20_000,
) -> dict[str, int]:
    """Load ``{table: csv_path or [csv_paths]}`` for one window in a single transaction; rows per table.

    Loading a window again replaces exactly that window's rows in each table (other windows are kept).
    Several files of one table (an activities range split into exports of 31 days) load together. Any
    error rolls the whole load back, so the tables never hold half a window.
    """
    eng = sa.create_engine(engine) if isinstance(engine, str) else engine
    loaded_at = datetime.now(UTC)
    counts: dict[str, int] = {}
    try:
        with eng.begin() as conn:
            for table_name, given in files.items():
                paths = [Path(given)] if isinstance(given, str | Path) else [Path(p) for p in given]
                counts[table_name] = _load_one(
                    conn,
                    paths,
                    table_name,
                    window,
                    loaded_at,
                    schema=schema,
                    delimiter=delimiter,
                    chunk_rows=chunk_rows,
                )
    finally:
        if isinstance(engine, str):
            eng.dispose()
    return counts


def window_row_counts(engine: Engine | str, table: str, *, schema: str | None = None) -> dict[tuple[str, str], int]:
    """Rows per loaded window of a table (for reports and checks)."""
    eng = sa.create_engine(engine) if isinstance(engine, str) else engine
    try:
        with eng.connect() as conn:
            tbl = sa.Table(check_table_name(table), sa.MetaData(), schema=schema, autoload_with=conn)
            stmt = sa.select(tbl.c[WINDOW_START], tbl.c[WINDOW_END], sa.func.count()).group_by(
                tbl.c[WINDOW_START], tbl.c[WINDOW_END]
            )
            return {(str(s), str(e)): int(n) for s, e, n in conn.execute(stmt)}
    finally:
        if isinstance(engine, str):
            eng.dispose()


@dataclass(frozen=True)
class ExportPlan:
    """A weekly export run: its window, how many exports it creates (contacts, plus one activities export per
    31 days), and where they are downloaded (empty in a dry run). ``as_dict()`` is the ``plan`` task's XCom,
    which the export tasks' templates read."""

    from_date: str
    to_date: str
    exports: int
    output_dir: str
    dry_run: bool

    @property
    def window(self) -> Window:
        return Window(datetime.fromisoformat(self.from_date), datetime.fromisoformat(self.to_date))

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_date": self.from_date,
            "to_date": self.to_date,
            "exports": self.exports,
            "output_dir": self.output_dir,
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportPlan:
        return cls(
            from_date=str(data["from_date"]),
            to_date=str(data["to_date"]),
            exports=int(data["exports"]),
            output_dir=str(data["output_dir"]),
            dry_run=bool(data["dry_run"]),
        )


def files_by_table(results: Iterable[Mapping[str, Any] | None], prefix: str = "connectif_") -> dict[str, list[str]]:
    """The downloaded files of the export tasks' results (``{"files": [...]}``, None when skipped), per table."""
    files: dict[str, list[str]] = {}
    for result in results:
        for path in (result or {}).get("files", []):
            files.setdefault(table_for_export_file(path, prefix), []).append(str(path))
    return files


def exports_summary(dag_id: str, run_id: str, plan: ExportPlan, loaded: Mapping[str, int] | None) -> RunSummary:
    """The run summary of an export run: the rows loaded per table, or (a dry run) the exports it would make."""
    window = {"from": plan.from_date, "to": plan.to_date}
    if plan.dry_run or loaded is None:
        estimate = {"exports": plan.exports, "api_requests": plan.exports * REQUESTS_PER_EXPORT}
        return RunSummary(
            dag_id=dag_id,
            run_id=run_id,
            object=SyncObject.EXPORTS,
            dry_run=True,
            state=RunState.PLANNED,
            api_requests=estimate["api_requests"],
            plan=estimate,
            notes=[f"would create {plan.exports} exports and load them into the warehouse"],
            extra={"window": window, "exports": plan.exports},
        )
    total = sum(loaded.values())
    return RunSummary(
        dag_id=dag_id,
        run_id=run_id,
        object=SyncObject.EXPORTS,
        extracted=total,
        notes=[f"{table}: {n} rows" for table, n in sorted(loaded.items())],
        extra={"window": window, "exports": plan.exports, "tables": dict(loaded), "loaded": total},
    )
