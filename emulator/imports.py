"""Processing one import file as Connectif would: batches of rows validated column by column.

Run by :mod:`emulator.workers`; progress is written after every batch, so ``GET /imports/{id}`` sees
``success`` and ``errors`` grow while the import is ``inProgress``.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Generator, Sequence
from itertools import compress, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from emulator.jobs import JobRun, JobStopped
from emulator.store import new_id, new_ids, now_iso
from emulator.validation import PRODUCT_REQUIRED, check_columns, url_in_domains

if TYPE_CHECKING:
    from emulator.state import EmulatorState

#: Cells are bounded by the upload limit; the per-field maximum is enforced as a row error instead,
#: so that one huge cell fails one row and not the whole file.
csv.field_size_limit(2**31 - 1)


def read_rows(path: Path, delimiter: str) -> Generator[list[str]]:
    """The cells of every data row but empty lines (the header row is skipped).

    Rows of one blank cell are blank lines too; the caller drops them per batch (``1 in map(len, batch)``
    is one C pass, where a Python filter here cost a call per row).
    """
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        yield from filter(None, reader)


def _clean(names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    """A row's values by column name, empty ones left out."""
    if None in values:
        return {name: value for name, value in zip(names, values, strict=True) if value is not None}
    return dict(zip(names, values, strict=True))


def _is_none(value: object) -> bool:
    return value is None


_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _domain_check(domains: list[str]) -> Callable[[str], bool]:
    """``url_in_domains`` for one account, with a compiled pattern that accepts the plain shapes in C.

    The pattern only says yes for ``http(s)://[sub.]domain[:port]`` followed by nothing or ``/ ? #``;
    anything else (user info, IPv6, odd characters) goes through ``url_in_domains`` and gets its answer.
    """
    plain = [d.lower() for d in domains if _PLAIN_DOMAIN.fullmatch(d)]
    if not plain:
        return lambda url: url_in_domains(url, domains)
    names = "|".join(map(re.escape, plain))
    fast = re.compile(rf"(?i)https?://(?:[a-z0-9-]+\.)*(?:{names})\.?(?::[0-9]{{1,5}})?(?:[/?#][^\s@]*)?")
    return lambda url: fast.fullmatch(url) is not None or url_in_domains(url, domains)


def read_header(path: Path, delimiter: str) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [h.strip() for h in next(csv.reader(handle, delimiter=delimiter), [])]


class ImportRun(JobRun):
    """Processes one import file in batches of rows (validated column by column), as Connectif would."""

    def __init__(self, state: EmulatorState, job: dict[str, Any], account_id: str) -> None:
        super().__init__(state, job, account_id)
        options = job["options"]
        self.delimiter: str = options["delimiter"]
        self.override: bool = options["overrideExisting"]
        self.only_empty: bool = options["updateOnlyEmptyFields"]
        self.success = 0
        self.errors = 0
        self._encoders: dict[tuple[tuple[str, ...], str], Callable[[str, tuple[Any, ...], str], str]] = {}

    def _update(self, **changes: Any) -> None:
        if not self.store.update_job("imports", self.job["id"], self.generation, **changes):
            raise JobStopped

    def _check_alive(self) -> None:
        current = self.store.get_job("imports", self.job["id"])
        if current is None or current["status"] != "inProgress" or self.generation != self.store.generation:
            raise JobStopped

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
        fail_at = max(1, total // 2) if fail else -1
        rows = read_rows(path, self.delimiter)
        try:
            while not (fail and processed >= fail_at):
                size = min(batch_size, fail_at - processed) if fail else batch_size
                batch = list(islice(rows, size))
                if not batch:
                    break
                read = len(batch)
                if 1 in map(len, batch):
                    batch = [cells for cells in batch if len(cells) > 1 or cells[0].strip()]
                processed += self._process(batch, processed + 1, header, domains)
                if read == size and not (fail and processed >= fail_at):
                    self._throttle(started, processed)
        finally:
            rows.close()
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
                    raise JobStopped
                time.sleep(max(0.0, min(0.02, processed / speed - (time.monotonic() - started))))
                speed = self.state.settings.import_rows_per_s
                if speed <= 0:
                    break

    def _process(self, batch: list[list[str]], first_line: int, header: list[str], domains: list[str]) -> int:
        """Validate and apply one batch of rows (data rows ``first_line``...); returns its number of rows."""
        self._check_alive()
        report: list[tuple[int, str, str]] = []
        width = len(header)
        if all(len(cells) == width for cells in batch):
            lines: Sequence[int] = range(first_line, first_line + len(batch))
            rows = batch
        else:
            lines, rows = [], []
            for line, cells in enumerate(batch, first_line):
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
        bad_lines = len({line for line, _f, _e in report})
        self.errors += bad_lines
        self.success += len(batch) - bad_lines
        if report and not self.store.add_import_errors(self.job["id"], report, self.generation):
            raise JobStopped
        self._update(success=self.success, errors=self.errors)
        return len(batch)

    def _validated(
        self, kind: str, rows: list[list[str]], header: list[str]
    ) -> tuple[list[str], list[list[Any]], dict[int, list[tuple[str, str]]]]:
        """(kept column names, clean values per column, {row index: [(field, error)]})."""
        names, columns, errors = check_columns(kind, header, rows, self.state.settings.max_field_chars)
        problems: dict[int, list[tuple[str, str]]] = {}
        for index, field, message in errors:
            problems.setdefault(index, []).append((field, message))
        return names, columns, problems

    def _contacts(
        self, lines: Sequence[int], rows: list[list[str]], header: list[str], report: list[tuple[int, str, str]]
    ) -> None:
        names, columns, problems = self._validated("contacts", rows, header)
        emails: list[Any] = columns[names.index("_email")] if "_email" in names else [None] * len(rows)
        for index in compress(range(len(emails)), map(_is_none, emails)):
            found = problems.setdefault(index, [])
            if not any(field == "_email" for field, _ in found):
                found.append(("_email", "the email is missing; every contact needs an _email"))
        for index in sorted(problems):
            report.extend((lines[index], field, message) for field, message in problems[index])
        values = list(zip(*columns, strict=True)) if columns else [() for _ in rows]
        if problems:
            good = [i for i in range(len(rows)) if i not in problems]
            cleaned = [(emails[i].lower(), values[i]) for i in good]
        else:
            cleaned = list(zip(map(str.lower, emails), values, strict=True))
        self._upsert("contacts", "email", names, cleaned, "_createdAt", "_updatedAt")

    def _products(
        self,
        lines: Sequence[int],
        rows: list[list[str]],
        header: list[str],
        report: list[tuple[int, str, str]],
        domains: list[str],
    ) -> None:
        names, columns, problems = self._validated("products", rows, header)
        by_name = dict(zip(names, columns, strict=True))
        missing = [None] * len(rows)
        for name in PRODUCT_REQUIRED:
            column = by_name.get(name, missing)
            for index in compress(range(len(column)), map(_is_none, column)):
                found = problems.setdefault(index, [])
                if not any(field == name for field, _ in found):
                    found.append((name, f"{name} is required and the cell is empty"))
        urls = by_name.get("productDetailUrl", missing)
        inside = _domain_check(domains)
        shown = ", ".join(domains) or "none"
        for index, url in enumerate(urls):
            if url is not None and not inside(url):
                problems.setdefault(index, []).append(
                    ("productDetailUrl", f'"{url}" is outside the account\'s authorised domains ({shown})')
                )
        for index in sorted(problems):
            report.extend((lines[index], field, message) for field, message in sorted(problems[index]))
        ids = by_name.get("productId", missing)
        values = list(zip(*columns, strict=True)) if columns else [() for _ in rows]
        cleaned = [(ids[i], values[i]) for i in range(len(rows)) if i not in problems]
        self._upsert("products", "product_id", names, cleaned, "createdAt", "updatedAt")

    def _upsert(
        self,
        table: str,
        key_col: str,
        names: list[str],
        cleaned: list[tuple[str, tuple[Any, ...]]],
        created: str,
        updated: str,
    ) -> None:
        """Apply rows in file order (a key repeated in the batch sees its earlier rows), honouring the options.

        ``cleaned`` holds (key, values of the ``names`` columns, None for no value) per good row.
        """
        existing = self.store.get_entities(table, key_col, self.account_id, [key for key, _ in cleaned])
        now = now_iso()
        fresh_ids = iter(new_ids(len(cleaned) - len(existing)) if len(cleaned) > len(existing) else [])
        encode_new = self._new_element_encoder(names, created, updated)
        items: list[tuple[str, dict[str, Any] | str]] = []
        if encode_new is not None and len({key for key, _ in cleaned}) == len(cleaned):
            # every key once (the usual case): new elements go from row values to JSON without a dict
            for key, values in cleaned:
                current = existing.get(key)
                if current is None:
                    items.append((key, encode_new(next(fresh_ids), values, now)))
                elif self.override:
                    items.append((key, self._merged(current, _clean(names, values), updated, now)))
        else:
            changed: dict[str, dict[str, Any]] = {}
            for key, values in cleaned:
                clean = _clean(names, values)
                current = changed.get(key) or existing.get(key)
                if current is None:
                    changed[key] = {"id": next(fresh_ids, None) or new_id(), **clean, created: now, updated: now}
                elif self.override:
                    changed[key] = self._merged(current, clean, updated, now)
            items = list(changed.items())
        if items and not self.store.put_entities(table, key_col, self.account_id, items, self.generation):
            raise JobStopped

    def _merged(self, current: dict[str, Any], clean: dict[str, Any], updated: str, now: str) -> dict[str, Any]:
        """The existing element after applying a row (with ``overrideExisting``)."""
        if self.only_empty:
            merged = dict(current)
            for name, value in clean.items():
                if merged.get(name) in (None, "", []):
                    merged[name] = value
        else:
            merged = {**current, **clean}
        merged[updated] = now
        return merged

    def _new_element_encoder(
        self, names: list[str], created: str, updated: str
    ) -> Callable[[str, tuple[Any, ...], str], str] | None:
        """JSON text of a new element, ``{"id", the row's non-empty values, created, updated}``, built by a
        msgspec struct (empty values are omitted defaults) instead of two dicts per row; None when a
        column name repeats or clashes with those keys, which the dict path handles."""
        if len(set(names)) != len(names) or {"id", created, updated} & set(names):
            return None
        cached = self._encoders.get((tuple(names), created))
        if cached is not None:
            return cached
        fields: list[tuple[str, Any, Any]] = [("id", str, "")]
        fields += [(f"f{index}", Any, None) for index in range(len(names))]
        fields += [("created", str, ""), ("updated", str, "")]
        rename = {f"f{index}": name for index, name in enumerate(names)} | {"created": created, "updated": updated}
        row_type = msgspec.defstruct("ImportedElement", fields, omit_defaults=True, rename=rename)
        encode = msgspec.json.Encoder().encode

        def encode_new(element_id: str, values: tuple[Any, ...], now: str) -> str:
            return encode(row_type(element_id, *values, now, now)).decode()

        self._encoders[(tuple(names), created)] = encode_new
        return encode_new

    def _coupons(
        self, lines: Sequence[int], rows: list[list[str]], header: list[str], report: list[tuple[int, str, str]]
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
                raise JobStopped
            coupon_set = self.store.get_coupon_set_raw(set_id)
            if coupon_set is not None:
                coupon_set["updatedAt"] = now_iso()
                self.store.put_coupon_set(self.account_id, coupon_set)
