"""Sending purchases one by one (Connectif has no bulk path for them), resumably and without duplicates.

The caller hands over the payloads of a time window, skipping purchases its ledger already knows Connectif
has; each outcome is recorded in the ledger right after its request, so a retried or re-run task continues
where it stopped. A purchase whose contact (E0101) or products (E0102) are missing is not lost: the contact
is upserted by email, the products from the purchase's own lines, and the purchase is sent again. What
still fails is recorded as ``failed`` for the next runs to retry, and reported. A purchase of a contact on
the suppression list (erased on request) is not sent at all, since the repair would create the contact
again: it is kept as ``failed`` (reason ``suppressed``).

The provider knows nothing of the sync library: the payloads and the ledger come in as callables (the
library's ``PurchaseBatch`` and ``StateStore`` fit them), as the import operator's ``upload_ledger`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from airflow.sdk import BaseOperator, Context

from connectif_provider.exceptions import (
    ConnectifError,
    ConnectifMissingContactError,
    ConnectifMissingProductError,
    ConnectifRateLimitedError,
    ConnectifServerError,
    ConnectifTransportError,
)
from connectif_provider.hooks.connectif import ConnectifHook

log = logging.getLogger(__name__)

#: Fields of a purchase line that describe the purchase, not the product (not sent when upserting it).
LINE_ONLY_FIELDS = frozenset({"quantity", "price"})
#: Errors that no retry of the same request can fix; the hook already retried the others.
TRANSIENT = (ConnectifServerError, ConnectifTransportError, ConnectifRateLimitedError)
#: Kept purchases listed by id in the result (the counts cover all of them).
KEPT_SAMPLE_SIZE = 10

ERASED_DETAIL = (
    "the contact was erased at its owner's request, so the purchase is not sent "
    "(withdraw with `connectif-sync unsuppress --object contacts EMAIL`)"
)


class PurchaseStatus(StrEnum):
    """How sending one purchase ended; the value is what the ledger records."""

    CONFIRMED = "confirmed"  # Connectif created it
    DUPLICATE = "duplicate"  # Connectif already had it (409): done as well
    FAILED = "failed"  # kept: the next runs send it again


@dataclass(frozen=True)
class PurchaseOutcome:
    """One purchase's outcome; ``reason`` is a short code (``E0103``, ``suppressed``...) the counts group by."""

    status: PurchaseStatus
    reason: str | None = None
    detail: str | None = None

    @classmethod
    def kept(cls, reason: str, detail: str) -> PurchaseOutcome:
        return cls(PurchaseStatus.FAILED, reason, f"{reason}: {detail}")


@dataclass
class SendCounts:
    """What sending a window did; ``as_dict()`` is the operator's result under ``counts``."""

    confirmed: int = 0
    duplicate: int = 0
    kept: int = 0
    contacts_upserted: int = 0
    products_upserted: int = 0
    api_requests: int = 0
    kept_reasons: dict[str, int] = field(default_factory=dict)
    kept_sample: list[str] = field(default_factory=list)

    def add(self, purchase_id: str, outcome: PurchaseOutcome) -> None:
        if outcome.status is PurchaseStatus.CONFIRMED:
            self.confirmed += 1
        elif outcome.status is PurchaseStatus.DUPLICATE:
            self.duplicate += 1
        else:
            self.kept += 1
            reason = outcome.reason or "failed"
            self.kept_reasons[reason] = self.kept_reasons.get(reason, 0) + 1
            if len(self.kept_sample) < KEPT_SAMPLE_SIZE:
                self.kept_sample.append(f"{purchase_id}: {outcome.detail}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "duplicate": self.duplicate,
            "kept": self.kept,
            "contacts_upserted": self.contacts_upserted,
            "products_upserted": self.products_upserted,
            "api_requests": self.api_requests,
            "kept_reasons": dict(self.kept_reasons),
            "kept_sample": list(self.kept_sample),
        }


class PurchaseLedger(Protocol):
    """Where outcomes are recorded as they happen (``connectif_sync.store.StateStore`` is one)."""

    def suppressed(self, obj: str | None = None) -> list[dict[str, Any]]: ...

    def record_purchase(self, purchase_id: str, status: str, detail: str | None = None) -> None: ...

    def close(self) -> None: ...


class PurchaseSource(Protocol):
    """The payloads to send (``connectif_sync.purchases.PurchaseBatch`` is one).

    ``describe()`` is called once the payloads are consumed: the source's own account of them (JSON-safe,
    e.g. rows read and rejected), returned with the counts so that a report needs no second pass.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def describe(self) -> dict[str, Any]: ...


def fires_workflows(requested: bool | None, run_type: object) -> bool:
    """Whether a run's purchases fire Connectif's purchase workflows (``triggerPurchaseEvent``).

    ``requested`` empty (``None``) means on, except in a backfill: history must not send e-mails.
    ``run_type`` is the run's ``DagRunType`` (or its string value).
    """
    if requested is not None:
        return bool(requested)
    return str(getattr(run_type, "value", run_type)) != "backfill"


def optional_bool(value: object, name: str) -> bool | None:
    """A yes/no argument that may arrive as rendered template text; empty text and ``None`` mean unset."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "none"):
        return None
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} is {value!r}: use true, false, or leave it empty")


def product_fields(payload: dict[str, Any], product_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The catalogue fields of the named products (all when none is named), from the purchase's own lines."""
    wanted = set(product_ids)
    out: dict[str, dict[str, Any]] = {}
    for line in payload.get("products", []):
        pid = str(line.get("productId"))
        if (not wanted or pid in wanted) and pid not in out:
            out[pid] = {k: v for k, v in line.items() if k not in LINE_ONLY_FIELDS and k != "productId"}
    return out


def _upsert(call: Callable[[], object], counts: SendCounts, code: str, what: str) -> PurchaseOutcome | None:
    """One repair request: None when it worked; the outcome that keeps the purchase when Connectif refused.
    Transient errors propagate (the task retries and the ledger resumes)."""
    counts.api_requests += 1
    try:
        call()
    except TRANSIENT:
        raise
    except ConnectifError as exc:
        return PurchaseOutcome.kept(code, f"{what} could not be created: {exc}")
    return None


def _repair_contact(hook: ConnectifHook, payload: dict[str, Any], counts: SendCounts) -> PurchaseOutcome | None:
    """Upsert the purchase's contact by email; the outcome that keeps the purchase, or None when repaired."""
    email = str(payload["contactEmail"])
    kept = _upsert(lambda: hook.upsert_contact(email, {}), counts, "E0101", "the contact")
    if kept is None:
        counts.contacts_upserted += 1
    return kept


def _repair_products(
    hook: ConnectifHook, payload: dict[str, Any], product_ids: Iterable[str], counts: SendCounts
) -> PurchaseOutcome | None:
    """Upsert the missing products from the purchase's lines; the outcome that keeps it, or None."""
    for pid, fields in product_fields(payload, product_ids).items():
        kept = _upsert(lambda: hook.upsert_product(pid, fields), counts, "E0102", f"product {pid}")  # noqa: B023
        if kept is not None:
            return kept
        counts.products_upserted += 1
    return None


def send_purchase(
    hook: ConnectifHook, payload: dict[str, Any], *, trigger_event: bool, counts: SendCounts
) -> PurchaseOutcome:
    """Send one purchase, repairing a missing contact or missing products once each.

    Transient errors that survived the hook's retries are raised: the task fails and its retry resumes
    after the last recorded purchase.
    """
    fixed_contact = fixed_products = False
    while True:
        counts.api_requests += 1
        try:
            created = hook.create_purchase(payload, trigger_purchase_event=trigger_event)
        except ConnectifMissingContactError as exc:
            if fixed_contact:
                return PurchaseOutcome.kept("E0101", f"contact still missing after upsert: {exc}")
            fixed_contact = True
            kept = _repair_contact(hook, payload, counts)
        except ConnectifMissingProductError as exc:
            if fixed_products:
                return PurchaseOutcome.kept("E0102", f"products still missing after upsert: {exc.product_ids}")
            fixed_products = True
            kept = _repair_products(hook, payload, exc.product_ids, counts)
        except TRANSIENT:
            raise
        except ConnectifError as exc:
            return PurchaseOutcome.kept(str(exc.code or exc.status), str(exc.detail or exc))
        else:
            return PurchaseOutcome(PurchaseStatus.DUPLICATE if created.get("duplicate") else PurchaseStatus.CONFIRMED)
        if kept is not None:
            return kept


def send_purchases(
    payloads: Iterable[dict[str, Any]], hook: ConnectifHook, ledger: PurchaseLedger, *, trigger_event: bool
) -> SendCounts:
    """Send every payload, recording each outcome in the ledger as soon as it is known."""
    counts = SendCounts()
    erased = {s["key"] for s in ledger.suppressed("contacts")}  # the suppression list (erasure requests)
    for payload in payloads:
        pid = str(payload["purchaseId"])
        if str(payload.get("contactEmail") or "").strip().lower() in erased:
            # Sending it would make the E0101 repair create the erased contact again: kept, no request made.
            outcome = PurchaseOutcome.kept("suppressed", ERASED_DETAIL)
        else:
            outcome = send_purchase(hook, payload, trigger_event=trigger_event, counts=counts)
        ledger.record_purchase(pid, outcome.status.value, outcome.detail)
        counts.add(pid, outcome)
        if outcome.status is PurchaseStatus.FAILED:
            log.warning("purchase %s kept for the next run: %s", pid, outcome.detail)
    return counts


class ConnectifPurchasesOperator(BaseOperator):
    """Send a window's purchases, one ``POST /purchases/`` each, repairing missing contacts and products.

    :param purchases: called with the task's context, returns the payloads to send (a :class:`PurchaseSource`).
    :param ledger: returns where each outcome is recorded (a :class:`PurchaseLedger`); closed after use.
    :param trigger_purchase_event: fire Connectif's purchase workflows; empty means on, except for backfill
        runs (history must not send e-mails). Templated: ``true``/``false``/empty text are read as such.
    :param plan_only: a dry run: consume the payloads (the source counts them), send and record nothing.
        Templated. (Not ``dry_run``: that name is ``BaseOperator.dry_run()``.)
    :param connectif_conn_id: the Connectif connection.

    Returns ``{"dry_run", "trigger_purchase_event", "counts"}`` (no ``counts`` in a dry run) merged with the
    source's ``describe()``.
    """

    template_fields = ("trigger_purchase_event", "plan_only", "connectif_conn_id")

    def __init__(
        self,
        *,
        purchases: Callable[[Context], PurchaseSource],
        ledger: Callable[[], PurchaseLedger],
        trigger_purchase_event: bool | str | None = None,
        plan_only: bool | str = False,
        connectif_conn_id: str = ConnectifHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.purchases = purchases
        self.ledger = ledger
        self.trigger_purchase_event = trigger_purchase_event
        self.plan_only = plan_only
        self.connectif_conn_id = connectif_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        requested = optional_bool(self.trigger_purchase_event, "trigger_purchase_event")
        dry_run = bool(optional_bool(self.plan_only, "plan_only"))
        trigger = fires_workflows(requested, getattr(context["dag_run"], "run_type", None))
        source = self.purchases(context)
        result: dict[str, Any] = {"dry_run": dry_run, "trigger_purchase_event": trigger}
        if dry_run:
            planned = sum(1 for _ in source)
            log.info("dry run: %d purchases would be sent (triggerPurchaseEvent=%s)", planned, trigger)
        else:
            ledger = self.ledger()
            try:
                counts = send_purchases(source, ConnectifHook(self.connectif_conn_id), ledger, trigger_event=trigger)
            finally:
                ledger.close()
            result["counts"] = counts.as_dict()
            log.info("purchases sent: %s", result["counts"])
        return {**source.describe(), **result}
