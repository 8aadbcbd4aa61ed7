"""Purchases: order lines grouped into the purchases API's JSON payloads, one per order.

Connectif has no bulk path for purchases (one ``POST /purchases/`` each, bounded by the rate limit), so
this module yields payloads for a time window ``[start, end)`` of order dates; the caller sends each and
records the outcome with :meth:`StateStore.record_purchase`. Purchases the store already knows as
``confirmed`` or ``duplicate`` are skipped, so a re-run (or a retried task) never resends one.

A purchase is rejected as a whole (every problem recorded with its key and field, e.g.
``products[2].unitPrice``) when any of its fields or lines is invalid: sending it without a line would
misstate the order. ``totalPrice`` and ``totalQuantity`` are the sums of the lines unless mapped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from collections.abc import Mapping as MappingOf
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from connectif_sync.contract import (
    REQUESTS_PER_MINUTE,
    RejectedRow,
    RequestEstimate,
    RunMode,
    RunState,
    RunSummary,
    SyncObject,
)
from connectif_sync.extract import DEFAULT_CHUNK_ROWS, Window, extract_arrow
from connectif_sync.mappings import Mapping, check_source_columns, resolve_mapping
from connectif_sync.report import SyncReport
from connectif_sync.shape import BAD_UTF8_REASON, ShapedChunk, repair_utf8, shape
from connectif_sync.store import StateStore
from connectif_sync.timefmt import parse_when
from connectif_sync.validate import source_ref

_LIST_FIELDS = {"categories", "tags", "relatedExternalProductIds"}
_INT_FIELDS = {"quantity", "totalQuantity", "inStockUnits", "ratingCount", "reviewCount", "priority"}
_NUM_FIELDS = {"unitPrice", "price", "totalPrice", "unitPriceOriginal", "unitPriceWithoutVAT", "discountedAmount",
               "discountedPercentage", "rating"}  # fmt: skip


def _json_value(name: str, text: str) -> Any:
    if name in _LIST_FIELDS:
        return text.split("|")
    if name in _INT_FIELDS:
        return int(text)
    if name in _NUM_FIELDS:
        return float(text)
    if name == "isBlacklisted":
        return text == "true"
    return text


def _bad_rows(chunk: ShapedChunk, fields: dict[str, Any], prefix: str) -> list[tuple[np.ndarray, str, str]]:
    out = []
    for p in chunk.problems:
        if fields[p.field].on_invalid == "reject":
            out.append((p.mask, prefix + p.field, p.reason))
    for name, spec in fields.items():
        if spec.required:
            empty = np.asarray(chunk.columns[name].is_null().to_numpy(zero_copy_only=False), dtype=bool)
            if empty.any():
                out.append((empty, prefix + name, "required field is empty"))
    return out


def _bad_text_rows(bad: dict[str, tuple[np.ndarray, list[bytes]]], m: Mapping) -> list[tuple[np.ndarray, str, str]]:
    """Rows holding a value that is not UTF-8 (see :func:`connectif_sync.shape.repair_utf8`): rejected."""
    out = []
    for column, (mask, _values) in bad.items():
        heads = [n for n, f in m.fields.items() if column in (f.column, f.country_column)]
        lines = [f"products[].{n}" for n, f in m.line_fields.items() if column in (f.column, f.country_column)]
        out.append((mask, (heads + lines + [column])[0], BAD_UTF8_REASON))
    return out


class PurchaseBatch:
    """Iterate to get the payloads of the window; ``report`` and ``rejected`` fill in as you go.

    When the iteration ends (and not ``dry_run``), the rejected purchases and the run's report are stored
    in the state store.
    """

    def __init__(
        self,
        source_url: str,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        *,
        mapping: str | Mapping | None = None,
        state_url: str | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        dry_run: bool = False,
        include_done: bool = False,
        extract_path: str = "auto",
    ) -> None:
        self.source_url = source_url
        self.window = Window(parse_when(start), parse_when(end))
        self.mapping = resolve_mapping("purchases", mapping)
        self.state_url = state_url
        self.chunk_rows = chunk_rows
        self.dry_run = dry_run
        self.include_done = include_done
        self.extract_path = extract_path
        self.report = SyncReport(object="purchases", mode=RunMode.PLAN if dry_run else RunMode.WINDOW)
        self.report.since = self.window.start.isoformat(sep=" ") if self.window.start else None
        self.rejected: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        started = time.perf_counter()
        m = self.mapping
        check_source_columns(m, self.source_url)
        store = StateStore(self.state_url, readonly=self.dry_run)
        try:
            if not self.dry_run:
                self.report.run_id = store.begin_run("purchases", "window", self.window.start)
            seen: set[str] = set()
            done: set[str] = set()
            group: list[tuple[dict[str, Any], dict[str, Any], list[tuple[str, str, str | None]], str]] = []
            for table in extract_arrow(
                self.source_url, m, window=self.window, chunk_rows=self.chunk_rows, path=self.extract_path
            ):
                self.report.extracted += table.num_rows
                table, bad_text = repair_utf8(table, m.source_columns())  # bytes that are not UTF-8: the row's
                head = shape(table, m)
                lines = shape(table, m, m.line_fields)
                problems = _bad_rows(head, m.fields, "") + _bad_rows(lines, m.line_fields, "products[].")
                problems += _bad_text_rows(bad_text, m)
                per_row: dict[int, list[tuple[str, str]]] = {}
                for mask, fname, reason in problems:
                    for i in np.flatnonzero(mask).tolist():
                        per_row.setdefault(i, []).append((fname, reason))
                heads = pa.table(head.columns).to_pylist()
                items = pa.table(lines.columns).to_pylist()
                pids = [h[m.key] for h in heads]
                if not self.include_done:
                    done |= store.purchases_done({p for p in pids if p})
                for i, (h, item) in enumerate(zip(heads, items, strict=True)):
                    pid = h[m.key] or f"<no {m.key}>"
                    if group and group[0][3] != pid:
                        yield from self._flush(group, seen, done)
                        group = []
                    errs = [(f, r, source_ref(m, table, i)) for f, r in per_row.get(i, [])]
                    group.append((h, item, errs, pid))
                # the last group may continue in the next chunk: it is flushed when its id changes
            if group:
                yield from self._flush(group, seen, done)
            self.report.api_requests = {
                "purchases": self.report.sent,
                "min_requests": self.report.sent,
                "min_minutes_at_rate_limit": round(self.report.sent / REQUESTS_PER_MINUTE, 2),
            }
            reasons: dict[str, int] = {}
            for r in self.rejected:
                k = f"{r['field']}: {r['reason']}"
                reasons[k] = reasons.get(k, 0) + 1
            self.report.rejected_by_reason = reasons
            self.report.duration_s = round(time.perf_counter() - started, 3)
            if not self.dry_run and self.report.run_id:
                store.record_rejected("purchases", self.report.run_id, self.rejected)
                store.finish_run(self.report.run_id, files=[], high_water=None, report=self.report.as_dict())
        finally:
            store.close()

    def describe(self) -> dict[str, Any]:
        """What the iteration found (the library's report), for the sender's result."""
        return {"report": self.report.as_dict()}

    def _flush(
        self,
        group: list[tuple[dict[str, Any], dict[str, Any], list[tuple[str, str, str | None]], str]],
        seen: set[str],
        done: set[str],
    ) -> Iterator[dict[str, Any]]:
        m = self.mapping
        pid = group[0][3]
        errors: list[tuple[str, str, str | None]] = []
        for n, (_h, _item, errs, _pid) in enumerate(group):
            errors.extend((f.replace("products[]", f"products[{n}]"), r, ref) for f, r, ref in errs)
        if pid in seen:
            self.report.duplicate += 1
            errors = [
                (
                    m.key,
                    "duplicate key: an earlier purchase with the same id was kept",
                    group[0][2][0][2] if group[0][2] else None,
                )
            ]
        if errors:
            if pid not in seen:
                self.report.invalid += 1
                seen.add(pid)
            for f, r, ref in errors:
                self.rejected.append(RejectedRow(pid, ref, f, r).as_dict())
            return
        seen.add(pid)
        if pid in done:
            self.report.unchanged += 1
            return
        head = group[0][0]
        payload: dict[str, Any] = {k: _json_value(k, v) for k, v in head.items() if v is not None}
        products = [{k: _json_value(k, v) for k, v in item.items() if v is not None} for _h, item, _e, _p in group]
        payload["products"] = products
        payload.setdefault("totalQuantity", sum(int(p["quantity"]) for p in products))
        payload.setdefault("totalPrice", round(sum(float(p["price"]) for p in products), 2))
        self.report.new += 1
        self.report.sent += 1
        yield payload


def purchase_payloads(source_url: str, start: str | datetime | None = None, end: str | datetime | None = None,
                      **kwargs: Any) -> PurchaseBatch:  # fmt: skip
    """The purchases API payloads of the orders dated in ``[start, end)`` (see :class:`PurchaseBatch`)."""
    return PurchaseBatch(source_url, start, end, **kwargs)


def plan_purchases(source_url: str, start: str | datetime | None = None, end: str | datetime | None = None,
                   **kwargs: Any) -> SyncReport:  # fmt: skip
    """Count what a purchases run would send, without sending or writing anything."""
    kwargs.pop("dry_run", None)
    batch = PurchaseBatch(source_url, start, end, dry_run=True, **kwargs)
    for _ in batch:
        pass
    return batch.report


@dataclass(frozen=True)
class PurchaseWindow:
    """A purchases run's order dates: its data interval ``[start, end)``, reaching back to ``since`` so that
    the run also retries the purchases earlier runs kept and catches orders that arrived late."""

    since: datetime
    start: datetime
    end: datetime

    @classmethod
    def looking_back(cls, start: datetime, end: datetime, hours: int) -> PurchaseWindow:
        if hours < 0:
            raise ValueError(f"lookback_hours is {hours}: use 0 or more hours")
        return cls(since=start - timedelta(hours=hours), start=start, end=end)

    def as_dict(self) -> dict[str, str]:
        return {"from": self.since.isoformat(), "to": self.end.isoformat(), "interval_from": self.start.isoformat()}


def purchases_notes(report: MappingOf[str, Any], counts: MappingOf[str, Any]) -> list[str]:
    """The summary's notes: rejects by reason, the purchases kept for the next run, the repairs made."""
    notes = [f"{reason}: {n}" for reason, n in sorted((report.get("rejected_by_reason") or {}).items())]
    if counts.get("kept"):
        notes.append(f"{counts['kept']} purchases kept for the next run: {counts['kept_reasons']}")
        notes += counts.get("kept_sample", [])
    if counts.get("contacts_upserted") or counts.get("products_upserted"):
        notes.append(
            f"created first in Connectif: {counts.get('contacts_upserted', 0)} contacts (E0101), "
            f"{counts.get('products_upserted', 0)} products (E0102)"
        )
    return notes


def purchases_summary(
    dag_id: str,
    run_id: str,
    sent: MappingOf[str, Any],
    window: PurchaseWindow,
    *,
    per_minute: float = REQUESTS_PER_MINUTE,
) -> RunSummary:
    """The run summary of a purchases run from what its sending step returned.

    ``sent`` holds ``dry_run``, ``trigger_purchase_event``, the library's ``report`` and, unless a dry run,
    the sender's ``counts`` (``confirmed``, ``duplicate``, ``kept``, ``contacts_upserted``...).
    """
    dry_run = bool(sent["dry_run"])
    rep: MappingOf[str, Any] = sent["report"]
    counts: MappingOf[str, Any] = sent.get("counts") or {}
    to_send = int(rep.get("sent", 0))
    estimate = RequestEstimate.for_calls(to_send, per_minute).as_dict()
    invalid, duplicate = int(rep.get("invalid", 0)), int(rep.get("duplicate", 0))
    return RunSummary(
        dag_id=dag_id,
        run_id=run_id,
        object=SyncObject.PURCHASES,
        dry_run=dry_run,
        state=RunState.PLANNED if dry_run else RunState.SUCCESS,
        library_run_id=rep.get("run_id"),
        extracted=int(rep.get("extracted", 0)),
        to_send=to_send,
        sent=int(counts.get("confirmed", 0)),
        unchanged=int(rep.get("unchanged", 0)),
        invalid=invalid,
        duplicate=duplicate,
        rejected=invalid + duplicate,
        rejected_by_reason=dict(rep.get("rejected_by_reason") or {}),
        api_requests=estimate if dry_run else counts.get("api_requests"),
        plan=estimate if dry_run else None,
        notes=purchases_notes(rep, counts),
        extra={
            "window": window.as_dict(),
            "trigger_purchase_event": sent["trigger_purchase_event"],
            "extracted_lines": rep.get("extracted", 0),
            "already_in_connectif": counts.get("duplicate", 0),
            "kept": counts.get("kept", 0),
            "contacts_upserted": counts.get("contacts_upserted", 0),
            "products_upserted": counts.get("products_upserted", 0),
        },
    )
