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
from emulator.validation import PRODUCT_REQUIRED, check_columns, url_in_domains

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
        batch_size = 5000 if speed <= 0 else max(1, min(5000, int(speed / 20)))
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
        lines: list[int] = []
        rows: list[list[str]] = []
        width = len(header)
        for line, cells in batch:
            if len(cells) != width:
                report.append(
                    (line, "", f"the row has {len(cells)} values but the header has {width} columns; check quoting")
                )
                continue
            lines.append(line)
            rows.append(cells)
        kind = self.job["type"]
        if kind == "contacts":
            self._contacts(lines, rows, header, report)
        elif kind == "products":
            self._products(lines, rows, header, report, domains)
        else:
            self._coupons(lines, rows, header, report)
        report.sort(key=lambda item: item[0])
        bad_lines = {line for line, _f, _e in report}
        self.errors += len(bad_lines)
        self.success += len(batch) - len(bad_lines)
        if report and not self.store.add_import_errors(self.job["id"], report, self.generation):
            raise _Stop
        self._update(success=self.success, errors=self.errors)
        return len(batch)

    def _merge(self, existing: dict[str, Any], clean: dict[str, Any]) -> dict[str, Any] | None:
        """The existing element after applying a row, or None when it must stay as it is."""
        if not self.override:
            return None
        merged = dict(existing)
        for name, value in clean.items():
            if self.only_empty and merged.get(name) not in (None, "", []):
                continue
            merged[name] = value
        return merged

    def _validated(
        self, kind: str, lines: list[int], rows: list[list[str]], header: list[str]
    ) -> list[tuple[int, dict[str, Any], list[tuple[str, str]]]]:
        """(line, clean values, [(field, error)]) per row."""
        clean, errors = check_columns(kind, header, rows, self.state.settings.max_field_chars)
        problems: dict[int, list[tuple[str, str]]] = {}
        for index, field, message in errors:
            problems.setdefault(index, []).append((field, message))
        return [(lines[i], values, problems.get(i, [])) for i, values in enumerate(clean)]

    def _contacts(
        self, lines: list[int], rows: list[list[str]], header: list[str], report: list[tuple[int, str, str]]
    ) -> None:
        cleaned: list[tuple[str, dict[str, Any]]] = []
        for line, clean, problems in self._validated("contacts", lines, rows, header):
            email = clean.get("_email")
            if email is None and not any(field == "_email" for field, _ in problems):
                problems.append(("_email", "the email is missing; every contact needs an _email"))
            if problems or email is None:
                report.extend((line, field, message) for field, message in problems)
                continue
            cleaned.append((email.lower(), clean))
        self._upsert("contacts", "email", cleaned, "_createdAt", "_updatedAt")

    def _products(
        self,
        lines: list[int],
        rows: list[list[str]],
        header: list[str],
        report: list[tuple[int, str, str]],
        domains: list[str],
    ) -> None:
        cleaned: list[tuple[str, dict[str, Any]]] = []
        for line, clean, problems in self._validated("products", lines, rows, header):
            bad = {field for field, _ in problems}
            problems += [
                (name, f"{name} is required and the cell is empty")
                for name in PRODUCT_REQUIRED
                if name not in clean and name not in bad
            ]
            url = clean.get("productDetailUrl")
            if url is not None and not url_in_domains(url, domains):
                shown = ", ".join(domains) or "none"
                problems.append(("productDetailUrl", f'"{url}" is outside the account\'s authorised domains ({shown})'))
            if problems:
                report.extend((line, field, message) for field, message in sorted(problems))
                continue
            cleaned.append((clean["productId"], clean))
        self._upsert("products", "product_id", cleaned, "createdAt", "updatedAt")

    def _upsert(
        self, table: str, key_col: str, cleaned: list[tuple[str, dict[str, Any]]], created: str, updated: str
    ) -> None:
        """Apply rows in file order (a key repeated in the batch sees its earlier rows), honouring the options."""
        existing = self.store.get_entities(table, key_col, self.account_id, [key for key, _ in cleaned])
        now = now_iso()
        changed: dict[str, dict[str, Any]] = {}
        for key, clean in cleaned:
            current = changed.get(key) or existing.get(key)
            if current is None:
                changed[key] = {"id": new_id(), **clean, created: now, updated: now}
                continue
            merged = self._merge(current, clean)
            if merged is not None:
                merged[updated] = now
                changed[key] = merged
        if changed and not self.store.put_entities(
            table, key_col, self.account_id, list(changed.items()), self.generation
        ):
            raise _Stop

    def _coupons(
        self, lines: list[int], rows: list[list[str]], header: list[str], report: list[tuple[int, str, str]]
    ) -> None:
        set_id = self.job["options"]["couponSetId"]
        max_chars = min(self.state.settings.max_field_chars, 1024)
        codes: list[tuple[int, str]] = []
        column = header.index("code")
        for line, cells in zip(lines, rows, strict=True):
            code = cells[column].strip()
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
