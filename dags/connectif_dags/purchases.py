"""Sending purchases one by one (Connectif has no bulk path for them), resumably and without duplicates.

The sync library yields the payloads of a time window, skipping purchases the state store already knows
Connectif has; each outcome is recorded right after its request, so a retried or re-run task continues
where it stopped. A purchase whose contact (E0101) or products (E0102) are missing is not lost: the contact
is upserted by email, the products from the purchase's own lines, and the purchase is sent again. What
still fails is recorded as ``failed`` and retried by the next runs (their window reaches back
``lookback_hours``), and reported. A purchase of a contact on the suppression list (erased on request) is
not sent at all, since the repair would create the contact again: it is kept as ``failed`` (``suppressed``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connectif_provider.exceptions import (
    ConnectifError,
    ConnectifMissingContactError,
    ConnectifMissingProductError,
    ConnectifRateLimitedError,
    ConnectifServerError,
    ConnectifTransportError,
)
from connectif_provider.hooks.connectif import ConnectifHook

log = logging.getLogger("airflow.task")

#: Fields of a purchase line that describe the purchase, not the product (not sent when upserting it).
LINE_ONLY_FIELDS = frozenset({"quantity", "price"})
#: Errors that no retry of the same request can fix; the hook already retried the others.
TRANSIENT = (ConnectifServerError, ConnectifTransportError, ConnectifRateLimitedError)


@dataclass
class SendCounts:
    """What sending a window did; ``as_dict()`` goes into the run summary."""

    confirmed: int = 0
    duplicate: int = 0
    kept: int = 0
    contacts_upserted: int = 0
    products_upserted: int = 0
    api_requests: int = 0
    kept_reasons: dict[str, int] = field(default_factory=dict)
    kept_sample: list[str] = field(default_factory=list)

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


def fires_workflows(requested: bool | None, run_type: object) -> bool:
    """Whether this run's purchases fire Connectif's purchase workflows (``triggerPurchaseEvent``).

    ``requested`` is the ``trigger_purchase_event`` param; empty (``None``) means on, except in a backfill:
    history must not send e-mails. ``run_type`` is the run's ``DagRunType`` (or its string value).
    """
    if requested is not None:
        return bool(requested)
    return str(getattr(run_type, "value", run_type)) != "backfill"


def product_fields(payload: dict[str, Any], product_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The catalogue fields of the named products, taken from the purchase's own lines."""
    wanted = set(product_ids)
    out: dict[str, dict[str, Any]] = {}
    for line in payload.get("products", []):
        pid = str(line.get("productId"))
        if (not wanted or pid in wanted) and pid not in out:
            out[pid] = {k: v for k, v in line.items() if k not in LINE_ONLY_FIELDS and k != "productId"}
    return out


ERASED_DETAIL = (
    "suppressed: the contact was erased at its owner's request, so the purchase is not sent "
    "(withdraw with `connectif-sync unsuppress --object contacts EMAIL`)"
)


def send_purchase(
    hook: ConnectifHook, payload: dict[str, Any], *, trigger_event: bool, counts: SendCounts
) -> tuple[str, str | None]:
    """Send one purchase, repairing a missing contact or products once each; ``(status, detail)``.

    ``status`` is ``confirmed``, ``duplicate`` (Connectif already had it) or ``failed`` (kept for the next
    run, ``detail`` says why). Transient errors that survived the hook's retries are raised: the task
    fails and its retry resumes after the last recorded purchase.
    """
    fixed_contact = fixed_products = False
    while True:
        counts.api_requests += 1
        try:
            created = hook.create_purchase(payload, trigger_purchase_event=trigger_event)
        except ConnectifMissingContactError as exc:
            if fixed_contact:
                return "failed", f"E0101 contact still missing after upsert: {exc}"
            fixed_contact = True
            counts.api_requests += 1
            try:
                hook.upsert_contact(str(payload["contactEmail"]), {})
            except TRANSIENT:
                raise
            except ConnectifError as upsert_exc:
                return "failed", f"E0101 and the contact could not be created: {upsert_exc}"
            counts.contacts_upserted += 1
            continue
        except ConnectifMissingProductError as exc:
            if fixed_products:
                return "failed", f"E0102 products still missing after upsert: {exc.product_ids}"
            fixed_products = True
            for pid, fields in product_fields(payload, exc.product_ids).items():
                counts.api_requests += 1
                try:
                    hook.upsert_product(pid, fields)
                except TRANSIENT:
                    raise
                except ConnectifError as upsert_exc:
                    return "failed", f"E0102 and product {pid} could not be created: {upsert_exc}"
                counts.products_upserted += 1
            continue
        except TRANSIENT:
            raise
        except ConnectifError as exc:
            return "failed", f"{exc.code or exc.status}: {exc.detail or exc}"
        return ("duplicate" if created.get("duplicate") else "confirmed"), None


def send_all(payloads: Iterable[dict[str, Any]], hook: ConnectifHook, store: Any, *, trigger_event: bool) -> SendCounts:
    """Send every payload, recording each outcome in the state store as soon as it is known."""
    counts = SendCounts()
    erased = {s["key"] for s in store.suppressed("contacts")}  # the suppression list (erasure requests)
    for payload in payloads:
        pid = str(payload["purchaseId"])
        if str(payload.get("contactEmail") or "").strip().lower() in erased:
            # Sending it would make the E0101 repair create the erased contact again: kept, no request made.
            status, detail = "failed", ERASED_DETAIL
        else:
            status, detail = send_purchase(hook, payload, trigger_event=trigger_event, counts=counts)
        store.record_purchase(pid, status, detail)
        if status == "confirmed":
            counts.confirmed += 1
        elif status == "duplicate":
            counts.duplicate += 1
        else:
            counts.kept += 1
            reason = (detail or "failed").split(":")[0]
            counts.kept_reasons[reason] = counts.kept_reasons.get(reason, 0) + 1
            if len(counts.kept_sample) < 10:
                counts.kept_sample.append(f"{pid}: {detail}")
            log.warning("purchase %s kept for the next run: %s", pid, detail)
    return counts
