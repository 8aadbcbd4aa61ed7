"""Background processing of imports and exports: one at a time per account, in order of creation.

Each account gets a worker thread while it has queued work; it ends when the queue is empty and a new
job starts it again. Progress is written after every batch, so ``GET /imports/{id}`` sees ``success`` and
``errors`` grow while the import is ``inProgress``. Work started before an admin reset notices the store's
new generation and stops without writing.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.store import new_id, now_iso
from emulator.validation import PRODUCT_REQUIRED, clean_contact, clean_product

if TYPE_CHECKING:
    from emulator.state import EmulatorState

log = logging.getLogger("emulator.processing")

#: Cells are bounded by the upload limit; the per-field maximum is enforced as a row error instead,
#: so that one huge cell fails one row and not the whole file.
csv.field_size_limit(2**31 - 1)


class _Stop(Exception):
    """The job was reset away or cancelled."""


class Workers:
    """Starts and tracks the per-account worker threads."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._active: set[tuple[str, str]] = set()
        self._stopping = threading.Event()

    def resume(self) -> None:
        """Pick up jobs left queued by a previous run (``--state``)."""
        for table in ("imports", "exports"):
            for account in self.state.store.accounts_with_jobs(table, ["queued"]):
                self.kick(table, account)

    def kick(self, table: str, account_id: str) -> None:
        with self._lock:
            if (table, account_id) in self._active or self._stopping.is_set():
                return
            self._active.add((table, account_id))
        thread = threading.Thread(target=self._run, args=(table, account_id), name=f"{table}-{account_id}", daemon=True)
        thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _run(self, table: str, account_id: str) -> None:
        store = self.state.store
        while not self._stopping.is_set():
            with self._lock:
                job = store.oldest_job(table, account_id, "queued")
                if job is None:
                    self._active.discard((table, account_id))
                    return
            try:
                if table == "imports":
                    ImportRun(self.state, job, account_id).run()
                else:
                    from emulator.exports import ExportRun

                    ExportRun(self.state, job, account_id).run()
            except _Stop:
                continue
            except Exception:
                log.exception("%s %s failed", table, job["id"])
                store.update_job(table, job["id"], status="error", finishedAt=now_iso())
        with self._lock:
            self._active.discard((table, account_id))


def read_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based data row number, cells) for every non-blank data row; the header row is skipped."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        line = 0
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            line += 1
            yield line, cells


def read_header(path: Path, delimiter: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [h.strip() for h in next(csv.reader(handle, delimiter=delimiter), [])]


class ImportRun:
    """Processes one import file row by row, as Connectif would."""

    def __init__(self, state: EmulatorState, job: dict[str, Any], account_id: str) -> None:
        self.state = state
        self.store = state.store
        self.job = job
        self.account_id = account_id
        self.generation = self.store.generation
        options = job["options"]
        self.delimiter: str = options["delimiter"]
        self.override: bool = options["overrideExisting"]
        self.only_empty: bool = options["updateOnlyEmptyFields"]
        self.success = 0
        self.errors = 0

    def _update(self, **changes: Any) -> None:
        if not self.store.update_job("imports", self.job["id"], self.generation, **changes):
            raise _Stop

    def _check_alive(self) -> None:
        current = self.store.get_job("imports", self.job["id"])
        if current is None or current["status"] != "inProgress" or self.generation != self.store.generation:
            raise _Stop

    def run(self) -> None:
        job_id = self.job["id"]
        file_path = self.store.job_file("imports", job_id)
        total = int(self.job["total"])
        fail = self.state.take_import_failure()
        self._update(status="inProgress", startedAt=now_iso(), success=0, errors=0)
        account = self.store.get_account(self.account_id) or {"authorizedDomains": []}
        domains: list[str] = account["authorizedDomains"]
        path = Path(file_path) if file_path else None
        if path is None or not path.exists():
            self._update(status="error", finishedAt=now_iso())
            return
        header = read_header(path, self.delimiter)
        speed = self.state.settings.import_rows_per_s
        batch_size = 2000 if speed <= 0 else max(1, min(2000, int(speed / 20)))
        started = time.monotonic()
        processed = 0
        batch: list[tuple[int, list[str]]] = []
        fail_at = max(1, total // 2) if fail else -1
        for line, cells in read_rows(path, self.delimiter):
            batch.append((line, cells))
            if len(batch) >= batch_size or (fail and processed + len(batch) >= fail_at):
                processed += self._process(batch, header, domains)
                batch = []
                if fail and processed >= fail_at:
                    break
                self._throttle(started, processed)
        if batch and not (fail and processed >= fail_at):
            processed += self._process(batch, header, domains)
        if fail:
            self._update(status="error", finishedAt=now_iso(), success=self.success, errors=self.errors)
            self.state.stats.fault("import_error")
        else:
            self._update(status="finished", finishedAt=now_iso(), success=self.success, errors=self.errors)
        path.unlink(missing_ok=True)
        self.store.set_job_file("imports", job_id, None)

    def _throttle(self, started: float, processed: int) -> None:
        speed = self.state.settings.import_rows_per_s
        if speed > 0:
            while processed / speed > time.monotonic() - started:
                if self.generation != self.store.generation:
                    raise _Stop
                time.sleep(max(0.0, min(0.02, processed / speed - (time.monotonic() - started))))
                speed = self.state.settings.import_rows_per_s
                if speed <= 0:
                    break

    def _process(self, batch: list[tuple[int, list[str]]], header: list[str], domains: list[str]) -> int:
        self._check_alive()
        report: list[tuple[int, str, str]] = []
        good: list[tuple[int, dict[str, str]]] = []
        width = len(header)
        for line, cells in batch:
            if len(cells) != width:
                report.append(
                    (line, "", f"the row has {len(cells)} values but the header has {width} columns; check quoting")
                )
                continue
            good.append((line, dict(zip(header, cells, strict=True))))
        kind = self.job["type"]
        if kind == "contacts":
            self._contacts(good, report)
        elif kind == "products":
            self._products(good, report, domains)
        else:
            self._coupons(good, report)
        report.sort(key=lambda item: item[0])
        bad_lines = {line for line, _f, _e in report}
        self.errors += len(bad_lines)
        self.success += len(batch) - len(bad_lines)
        if report and not self.store.add_import_errors(self.job["id"], report, self.generation):
            raise _Stop
        self._update(success=self.success, errors=self.errors)
        return len(batch)

    def _merge(self, existing: dict[str, Any] | None, clean: dict[str, Any]) -> dict[str, Any] | None:
        """The element after applying a row, or None when it must stay as it is."""
        if existing is None:
            return dict(clean)
        if not self.override:
            return None
        merged = dict(existing)
        for name, value in clean.items():
            if self.only_empty and merged.get(name) not in (None, "", []):
                continue
            merged[name] = value
        return merged

    def _contacts(self, rows: list[tuple[int, dict[str, str]]], report: list[tuple[int, str, str]]) -> None:
        max_chars = self.state.settings.max_field_chars
        cleaned: list[tuple[int, str, dict[str, Any]]] = []
        for line, fields in rows:
            clean, errors = clean_contact(fields, max_chars)
            if "_email" not in clean and not any(f == "_email" for f, _ in errors):
                errors.append(("_email", "the email is missing; every contact needs an _email"))
            if errors:
                report.extend((line, f, e) for f, e in errors)
                continue
            cleaned.append((line, clean["_email"].lower(), clean))
        existing = self.store.get_entities("contacts", "email", self.account_id, [k for _, k, _ in cleaned])
        now = now_iso()
        changed: dict[str, dict[str, Any]] = {}
        for _line, key, clean in cleaned:
            current = changed.get(key, existing.get(key))
            merged = self._merge(current, clean)
            if merged is None:
                continue
            if current is None:
                merged = {"id": new_id(), **merged, "_createdAt": now}
            merged["_updatedAt"] = now
            changed[key] = merged
        if changed and not self.store.put_entities(
            "contacts", "email", self.account_id, list(changed.items()), self.generation
        ):
            raise _Stop

    def _products(
        self, rows: list[tuple[int, dict[str, str]]], report: list[tuple[int, str, str]], domains: list[str]
    ) -> None:
        max_chars = self.state.settings.max_field_chars
        cleaned: list[tuple[str, dict[str, Any]]] = []
        for line, fields in rows:
            clean, errors = clean_product(fields, max_chars, domains)
            for required in PRODUCT_REQUIRED:
                if required not in clean and not any(f == required for f, _ in errors):
                    errors.append((required, f"{required} is required and the cell is empty"))
            if errors:
                report.extend((line, f, e) for f, e in errors)
                continue
            cleaned.append((clean["productId"], clean))
        existing = self.store.get_entities("products", "product_id", self.account_id, [k for k, _ in cleaned])
        now = now_iso()
        changed: dict[str, dict[str, Any]] = {}
        for key, clean in cleaned:
            current = changed.get(key, existing.get(key))
            merged = self._merge(current, clean)
            if merged is None:
                continue
            if current is None:
                merged = {"id": new_id(), **merged, "createdAt": now}
            merged["updatedAt"] = now
            changed[key] = merged
        if changed and not self.store.put_entities(
            "products", "product_id", self.account_id, list(changed.items()), self.generation
        ):
            raise _Stop

    def _coupons(self, rows: list[tuple[int, dict[str, str]]], report: list[tuple[int, str, str]]) -> None:
        set_id = self.job["options"]["couponSetId"]
        max_chars = min(self.state.settings.max_field_chars, 1024)
        codes: list[tuple[int, str]] = []
        for line, fields in rows:
            code = (fields.get("code") or "").strip()
            if not code:
                report.append((line, "code", "the code is empty"))
            elif len(code) > max_chars:
                report.append((line, "code", f"the code is {len(code)} characters long; the maximum is {max_chars}"))
            else:
                codes.append((line, code))
        existing = self.store.existing_codes(set_id, [c for _, c in codes])
        fresh: list[str] = []
        seen: set[str] = set()
        for line, code in codes:
            if code in existing or code in seen:
                report.append((line, "code", f'the code "{code}" is already in the coupon set'))
                continue
            seen.add(code)
            fresh.append(code)
        if fresh:
            if not self.store.add_codes(set_id, fresh, self.generation):
                raise _Stop
            coupon_set = self.store.get_coupon_set_raw(set_id)
            if coupon_set is not None:
                coupon_set["updatedAt"] = now_iso()
                self.store.put_coupon_set(self.account_id, coupon_set)
