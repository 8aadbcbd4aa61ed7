"""Sending purchases with the E0101/E0102 repair, against a scripted hook (no Airflow run, no server)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from connectif_provider.exceptions import (
    ConnectifMissingContactError,
    ConnectifMissingProductError,
    ConnectifServerError,
    ConnectifUnauthorizedDomainError,
)
from connectif_provider.hooks.connectif import ConnectifHook
from connectif_provider.operators.purchases import (
    ConnectifPurchasesOperator,
    PurchaseStatus,
    SendCounts,
    fires_workflows,
    optional_bool,
    product_fields,
    send_purchase,
    send_purchases,
)

PAYLOAD = {
    "purchaseId": "P1",
    "contactEmail": "Ana@Example.com",
    "products": [
        {"productId": "A", "name": "Shoe", "price": 10.0, "quantity": 1, "url": "https://example.com/a"},
        {"productId": "B", "name": "Sock", "price": 2.0, "quantity": 2},
        {"productId": "A", "name": "Shoe again", "price": 10.0, "quantity": 1},
    ],
}


class ScriptedHook:
    """Answers ``create_purchase`` from a script of errors (then success); records every call."""

    def __init__(self, errors: list[Exception] | None = None, upsert_error: Exception | None = None) -> None:
        self.errors = list(errors or [])
        self.upsert_error = upsert_error
        self.calls: list[tuple[str, Any]] = []

    def create_purchase(self, purchase: dict[str, Any], *, trigger_purchase_event: bool = False) -> dict[str, Any]:
        self.calls.append(("purchase", (purchase["purchaseId"], trigger_purchase_event)))
        if self.errors:
            raise self.errors.pop(0)
        return {"duplicate": purchase["purchaseId"].startswith("dup")}

    def upsert_contact(self, email: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("contact", email))
        if self.upsert_error:
            raise self.upsert_error
        return {}

    def upsert_product(self, product_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("product", (product_id, fields)))
        if self.upsert_error:
            raise self.upsert_error
        return {}


class Ledger:
    def __init__(self, suppressed: list[str] | None = None) -> None:
        self.keys = suppressed or []
        self.recorded: list[tuple[str, str, str | None]] = []
        self.closed = False

    def suppressed(self, obj: str | None = None) -> list[dict[str, Any]]:
        assert obj == "contacts"
        return [{"key": k, "reason": "erasure request id=1"} for k in self.keys]

    def record_purchase(self, purchase_id: str, status: str, detail: str | None = None) -> None:
        self.recorded.append((purchase_id, status, detail))

    def close(self) -> None:
        self.closed = True


def missing_contact() -> ConnectifMissingContactError:
    return ConnectifMissingContactError("contact missing", status=400, code="E0101")


def missing_products(*ids: str) -> ConnectifMissingProductError:
    return ConnectifMissingProductError("products missing", status=400, code="E0102", body={"productIds": list(ids)})


def send(hook: ScriptedHook, payload: dict[str, Any] = PAYLOAD) -> tuple[Any, SendCounts]:
    counts = SendCounts()
    outcome = send_purchase(cast(ConnectifHook, hook), payload, trigger_event=True, counts=counts)
    return outcome, counts


def test_a_missing_contact_and_missing_products_are_created_then_the_purchase_goes() -> None:
    hook = ScriptedHook([missing_contact(), missing_products("B")])

    outcome, counts = send(hook)

    assert outcome.status is PurchaseStatus.CONFIRMED
    assert [c[0] for c in hook.calls] == ["purchase", "contact", "purchase", "product", "purchase"]
    assert hook.calls[1] == ("contact", "Ana@Example.com")
    assert hook.calls[3] == ("product", ("B", {"name": "Sock"}))  # line-only fields are not catalogue fields
    assert (counts.contacts_upserted, counts.products_upserted, counts.api_requests) == (1, 1, 5)


def test_a_contact_still_missing_after_its_repair_keeps_the_purchase() -> None:
    outcome, counts = send(ScriptedHook([missing_contact(), missing_contact()]))

    assert outcome.status is PurchaseStatus.FAILED and outcome.reason == "E0101"
    assert outcome.detail.startswith("E0101: contact still missing after upsert")
    assert counts.contacts_upserted == 1


def test_a_product_that_cannot_be_created_keeps_the_purchase_with_connectifs_reason() -> None:
    domain = ConnectifUnauthorizedDomainError("bad domain", status=400, code="E0201")

    outcome, counts = send(ScriptedHook([missing_products("A")], upsert_error=domain))

    assert outcome.status is PurchaseStatus.FAILED and outcome.reason == "E0102"
    assert "product A could not be created" in str(outcome.detail)
    assert counts.products_upserted == 0


def test_another_error_keeps_the_purchase_under_its_code() -> None:
    outcome, _ = send(ScriptedHook([ConnectifUnauthorizedDomainError("x", status=400, code="E0103", detail="url")]))

    assert (outcome.status, outcome.reason, outcome.detail) == (PurchaseStatus.FAILED, "E0103", "E0103: url")


def test_transient_errors_are_raised_for_the_task_retry() -> None:
    with pytest.raises(ConnectifServerError):
        send(ScriptedHook([ConnectifServerError("boom", status=503)]))
    with pytest.raises(ConnectifServerError):
        send(ScriptedHook([missing_contact()], upsert_error=ConnectifServerError("boom", status=503)))


def test_every_outcome_is_recorded_and_an_erased_contact_is_never_recreated() -> None:
    payloads = [
        {**PAYLOAD, "purchaseId": "P1"},
        {**PAYLOAD, "purchaseId": "dup-2"},
        {**PAYLOAD, "purchaseId": "P3", "contactEmail": " erased@example.com "},
        {**PAYLOAD, "purchaseId": "P4"},
    ]
    hook = ScriptedHook([ConnectifUnauthorizedDomainError("x", status=400, code="E0103", detail="url")])  # P1
    ledger = Ledger(["erased@example.com"])

    counts = send_purchases(payloads, cast(ConnectifHook, hook), ledger, trigger_event=False)

    assert [(pid, status) for pid, status, _ in ledger.recorded] == [
        ("P1", "failed"), ("dup-2", "duplicate"), ("P3", "failed"), ("P4", "confirmed"),
    ]  # fmt: skip
    assert ("contact", " erased@example.com ") not in hook.calls
    assert "P3" not in {c[1][0] for c in hook.calls if c[0] == "purchase"}
    assert counts.as_dict() | {"kept_sample": None} == {
        "confirmed": 1, "duplicate": 1, "kept": 2, "contacts_upserted": 0, "products_upserted": 0,
        "api_requests": 3, "kept_reasons": {"E0103": 1, "suppressed": 1}, "kept_sample": None,
    }  # fmt: skip
    assert counts.kept_sample[1].startswith("P3: suppressed: the contact was erased")


def test_product_fields_take_each_named_product_once_from_the_lines() -> None:
    assert product_fields(PAYLOAD, []) == {"A": {"name": "Shoe", "url": "https://example.com/a"}, "B": {"name": "Sock"}}
    assert product_fields(PAYLOAD, ["B", "Z"]) == {"B": {"name": "Sock"}}


@pytest.mark.parametrize(
    ("requested", "run_type", "expected"),
    [(None, "backfill", False), (None, SimpleNamespace(value="backfill"), False), (None, "scheduled", True),
     (True, "backfill", True), (False, "manual", False)],
)  # fmt: skip
def test_workflows_fire_unless_asked_otherwise_or_a_backfill(requested: Any, run_type: Any, expected: bool) -> None:
    assert fires_workflows(requested, run_type) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("None", None), (True, True), ("True", True), ("false", False), (" off ", False)],
)
def test_rendered_templates_read_as_yes_no_or_unset(value: object, expected: bool | None) -> None:
    assert optional_bool(value, "x") is expected


def test_a_value_that_is_no_yes_or_no_names_the_argument() -> None:
    with pytest.raises(ValueError, match="trigger_purchase_event is 'maybe': use true, false, or leave it empty"):
        optional_bool("maybe", "trigger_purchase_event")


class Source:
    def __init__(self, payloads: list[dict[str, Any]]) -> None:
        self.payloads = payloads
        self.consumed = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for p in self.payloads:
            self.consumed += 1
            yield p

    def describe(self) -> dict[str, Any]:
        return {"report": {"sent": self.consumed}}


def test_the_operator_plans_only_without_a_connection_or_a_ledger() -> None:
    source = Source([PAYLOAD, {**PAYLOAD, "purchaseId": "P2"}])

    def no_ledger() -> Ledger:
        raise AssertionError("a dry run opens no ledger")

    op = ConnectifPurchasesOperator(
        task_id="send", purchases=lambda context: source, ledger=no_ledger, plan_only="True",
        trigger_purchase_event="",
    )  # fmt: skip
    result = op.execute(cast(Any, {"dag_run": SimpleNamespace(run_type="backfill")}))

    assert result == {"report": {"sent": 2}, "dry_run": True, "trigger_purchase_event": False}


def test_the_operator_sends_records_and_closes_its_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = ScriptedHook()
    ledger = Ledger()
    monkeypatch.setattr("connectif_provider.operators.purchases.ConnectifHook", lambda conn_id: hook)
    op = ConnectifPurchasesOperator(
        task_id="send", purchases=lambda context: Source([PAYLOAD]), ledger=lambda: ledger, plan_only=False,
        trigger_purchase_event="true",
    )  # fmt: skip

    result = op.execute(cast(Any, {"dag_run": SimpleNamespace(run_type="backfill")}))

    assert result["dry_run"] is False and result["trigger_purchase_event"] is True
    assert result["counts"]["confirmed"] == 1 and result["report"] == {"sent": 1}
    assert ledger.recorded == [("P1", "confirmed", None)] and ledger.closed
    assert hook.calls == [("purchase", ("P1", True))]
    assert set(ConnectifPurchasesOperator.template_fields) >= {"trigger_purchase_event", "plan_only"}
