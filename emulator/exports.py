"""Building export files: a ZIP of CSVs made from the emulator's stored data (contract section 6)."""

from __future__ import annotations

import csv
import io
import time
import uuid
import zipfile
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.jobs import JobRun, JobStopped
from emulator.store import now_iso

if TYPE_CHECKING:
    pass

CONTACT_SYSTEM_COLUMNS = [
    "_email",
    "_name",
    "_surname",
    "_birthdate",
    "_externalId",
    "_mobilePhone",
    "_points",
    "_emailStatus",
    "_mobilePhoneStatus",
    "_newsletterSubscriptionStatus",
    "_smsSubscriptionStatus",
]
CONTACT_TAIL_COLUMNS = [
    "_totalPurchases",
    "_totalPurchasesAmount",
    "_averagePurchasesAmount",
    "_firstPurchaseDate",
    "_lastPurchaseDate",
    "_createdAt",
    "_updatedAt",
]
DATETIME_COLUMNS = {"_firstPurchaseDate", "_lastPurchaseDate", "_createdAt", "_updatedAt", "date"}
ACTIVITY_COLUMNS = [
    "activityId",
    "type",
    "contactEmail",
    "date",
    "purchaseId",
    "cartId",
    "paymentMethod",
    "totalPrice",
    "totalQuantity",
]
ACTIVITY_PRODUCT_COLUMNS = ["activityId", "purchaseId", "productId", "name", "quantity", "price", "unitPrice"]


def format_datetime(value: str | None, fmt: str) -> str:
    """Moment.js-style ``dateFormat`` (``ISO``, ``L``, ``LL``, ``LLL``) of an ISO date-time."""
    if not value:
        return ""
    if fmt == "ISO":
        return value
    moment = datetime.fromisoformat(value)
    if fmt == "L":
        return moment.strftime("%m/%d/%Y")
    day = f"{moment.strftime('%B')} {moment.day}, {moment.year}"
    if fmt == "LL":
        return day
    hour = moment.hour % 12 or 12
    return f"{day} {hour}:{moment.minute:02d} {'PM' if moment.hour >= 12 else 'AM'}"


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def _csv_bytes(columns: list[str], rows: Iterable[dict[str, Any]], delimiter: str, bom: bool) -> bytes:
    buffer = io.StringIO()
    if bom:
        buffer.write("\ufeff")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue().encode("utf-8")


def _day_bounds(job: dict[str, Any]) -> tuple[str | None, str | None]:
    filters = job.get("filters") or {}
    start, end = filters.get("fromDate"), filters.get("toDate")
    if not start or not end:
        return None, None
    return normalise_bound(start, False), normalise_bound(end, True)


def normalise_bound(value: str, end: bool) -> str:
    """A filter date as a sortable UTC ISO string; a bare date as an end bound includes that whole day."""
    if len(value) == 10:
        day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
        return f"{day.isoformat()}T00:00:00.000Z"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ExportRun(JobRun):
    """Processes one export: waits ``export_processing_s`` (queued work on Connectif's side), writes the ZIP."""

    def run(self) -> None:
        job = self.job
        if not self.store.update_job("exports", job["id"], self.generation, status="inProgress", startedAt=now_iso()):
            raise JobStopped
        started = time.monotonic()
        while time.monotonic() - started < self.state.settings.export_processing_s:
            if self.generation != self.store.generation:
                raise JobStopped
            time.sleep(0.02)
        files = self._files()
        total = sum(count for _name, _data, count in files)
        file_name = f"export-{job['exportType']}-{uuid.uuid4()}.zip"
        path = self.store.files_dir / "exports" / f"{job['id']}.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data, _count in files:
                if isinstance(data, Path):
                    archive.write(data, name)
                    data.unlink()
                else:
                    archive.writestr(name, data)
        if not self.store.update_job(
            "exports",
            job["id"],
            self.generation,
            status="finished",
            progress=total,
            total=total,
            finishedAt=now_iso(),
            fileName=file_name,
        ):
            Path(path).unlink(missing_ok=True)
            raise JobStopped
        self.store.set_job_file("exports", job["id"], str(path))

    def _files(self) -> list[tuple[str, bytes | Path, int]]:
        kind = self.job["exportType"]
        if kind == "contacts":
            return [self._contacts()]
        if kind == "activities":
            return self._activities()
        return [self._data_explorer()]

    def _contacts(self) -> tuple[str, bytes | Path, int]:
        """Streamed to a temporary file: two passes (the custom columns first), never all contacts in memory."""
        job = self.job
        fmt = job.get("dateFormat", "ISO")
        start, end = _day_bounds(job)
        custom: dict[str, None] = {}
        for contact in self.store.iter_entities("contacts", self.account_id):
            custom.update((k, None) for k in contact if not k.startswith("_") and k != "id")
        columns = ["id", *CONTACT_SYSTEM_COLUMNS, *custom, *CONTACT_TAIL_COLUMNS]
        aggregates = self.store.all_purchase_aggregates(self.account_id)
        none = self.store.no_purchases()
        path = self.store.files_dir / "exports" / f"{job['id']}-contacts.csv"
        count = 0
        with path.open("w", encoding="utf-8", newline="") as handle:
            if self.state.settings.export_bom:
                handle.write("\ufeff")
            writer = csv.writer(handle, delimiter=job["delimiter"], lineterminator="\n")
            writer.writerow(columns)
            for contact in self.store.iter_entities("contacts", self.account_id):
                if start and end and not (start <= contact.get("_updatedAt", "") < end):
                    continue
                row = {**contact, **aggregates.get(contact["_email"].lower(), none)}
                for column in DATETIME_COLUMNS & row.keys():
                    row[column] = format_datetime(row[column], fmt)
                writer.writerow([_cell(row.get(c)) for c in columns])
                count += 1
        return f"export-contacts-{uuid.uuid4()}.csv", path, count

    def _activities(self) -> list[tuple[str, bytes | Path, int]]:
        job = self.job
        fmt = job.get("dateFormat", "ISO")
        start, end = _day_bounds(job)
        types = set((job.get("filters") or {}).get("activityTypes") or [])
        activities: list[dict[str, Any]] = []
        products: list[dict[str, Any]] = []
        for activity in self.store.activities(self.account_id, start, end):
            if types and activity["type"] not in types:
                continue
            row = {**activity, "activityId": activity["id"], "date": format_datetime(activity["date"], fmt)}
            activities.append(row)
            for product in activity.get("products") or []:
                products.append({**product, "activityId": activity["id"], "purchaseId": activity.get("purchaseId")})
        stem = f"export-activities-{uuid.uuid4()}"
        bom = self.state.settings.export_bom
        delimiter = job["delimiter"]
        return [
            (f"{stem}.csv", _csv_bytes(ACTIVITY_COLUMNS, activities, delimiter, bom), len(activities)),
            (f"{stem}-products.csv", _csv_bytes(ACTIVITY_PRODUCT_COLUMNS, products, delimiter, bom), 0),
        ]

    def _data_explorer(self) -> tuple[str, bytes | Path, int]:
        """One row per day of the range: purchases and revenue (the emulator's stand-in for a saved report)."""
        job = self.job
        filters = job["filters"]
        first = date.fromisoformat(filters["fromDate"])
        last = date.fromisoformat(filters["toDate"])
        days: dict[str, dict[str, Any]] = {}
        day = first
        while day <= last:
            days[day.isoformat()] = {
                "reportId": filters["reportId"],
                "date": day.isoformat(),
                "purchases": 0,
                "revenue": 0,
            }
            day += timedelta(days=1)
        start, end = normalise_bound(filters["fromDate"], False), normalise_bound(filters["toDate"], True)
        for activity in self.store.activities(self.account_id, start, end):
            if activity["type"] != "purchase":
                continue
            row = days.get(activity["date"][:10])
            if row is not None:
                row["purchases"] += 1
                row["revenue"] = round(row["revenue"] + float(activity.get("totalPrice") or 0), 2)
        data = _csv_bytes(
            ["reportId", "date", "purchases", "revenue"],
            days.values(),
            job["delimiter"],
            self.state.settings.export_bom,
        )
        return f"export-data-explorer-{uuid.uuid4()}.csv", data, len(days)
