"""Contacts, products, purchases, coupon sets and workflows (contract sections 7 to 10)."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, field_validator

from emulator.common import (
    both,
    caller,
    drop_none,
    json_body,
    json_object,
    page,
    paging,
    parse_model,
    state_of,
    utc_iso,
)
from emulator.errors import ApiError
from emulator.state import EmulatorState
from emulator.store import new_id, now_iso
from emulator.validation import (
    PRODUCT_FIELDS,
    FieldError,
    check_email,
    check_price,
    check_url,
    clean_contact,
    clean_product,
    url_in_domains,
)

router = APIRouter()


# --- contacts ---------------------------------------------------------------------------------------------------
def _email_from_path(raw: str) -> str:
    """Emails may arrive URL-encoded once more than the path decoding undoes (``%40`` -> ``@``)."""
    value = unquote(raw) if "%" in raw else raw
    return value.strip()


def render_contact(state: EmulatorState, account_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, **state.store.purchase_aggregates(account_id, data["_email"].lower())}


def _get_contact(state: EmulatorState, account_id: str, email: str) -> dict[str, Any]:
    data = state.store.get_entity("contacts", "email", account_id, email.lower())
    if data is None:
        raise ApiError(404, f"Contact {email} not found")
    return data


@router.get("/contacts/{email}")
async def get_contact(request: Request, email: str) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, "contact:read")
    address = _email_from_path(email)
    return render_contact(state, auth.account_id, _get_contact(state, auth.account_id, address))


async def _patch_contact(request: Request, email: str) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, "contact:write")
    address = _email_from_path(email)
    try:
        address = check_email(address)
    except FieldError as exc:
        raise ApiError(422, f"email: {exc}", validation_errors=[("email", str(exc))]) from None
    body = json_object(await json_body(request))
    given = body.pop("_email", None)
    if given is not None and (not isinstance(given, str) or given.strip().lower() != address.lower()):
        raise ApiError(422, "_email in the body differs from the email in the path", validation_errors=[("_email", "")])
    clean, errors = clean_contact(
        body, state.settings.max_field_chars, strict=True, refuse_unknown=state.settings.strict_unknown_fields
    )
    if errors:
        raise ApiError(422, "; ".join(f"{p}: {r}" for p, r in errors[:5]), validation_errors=errors)
    key = address.lower()
    with state.store.lock:
        current = state.store.get_entity("contacts", "email", auth.account_id, key)
        now = now_iso()
        if current is None:
            current = {"id": new_id(), "_email": address, "_createdAt": now}
        merged = {**current, **clean, "_updatedAt": now}
        state.store.put_entities("contacts", "email", auth.account_id, [(key, merged)])
    return render_contact(state, auth.account_id, merged)


@router.patch("/contacts/email/{email}")
async def patch_contact_by_email(request: Request, email: str) -> dict[str, Any]:
    return await _patch_contact(request, email)


@router.patch("/contacts/{email}")
async def patch_contact(request: Request, email: str) -> dict[str, Any]:
    return await _patch_contact(request, email)


@router.delete("/contacts/email/{email}", status_code=204)
async def delete_contact(request: Request, email: str) -> Response:
    """Deleting a contact removes its activities; its purchases (and so the statistics) stay."""
    state = state_of(request)
    auth = caller(request, "contact:delete")
    address = _email_from_path(email)
    if not state.store.delete_entity("contacts", "email", auth.account_id, address.lower()):
        raise ApiError(404, f"Contact {address} not found")
    return Response(status_code=204)


# --- products ---------------------------------------------------------------------------------------------------
@router.get("/products/product-id/{product_id}")
async def get_product(request: Request, product_id: str) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, "product:read")
    data = state.store.get_entity("products", "product_id", auth.account_id, product_id)
    if data is None:
        raise ApiError(404, f"Product {product_id} not found")
    return data


@router.patch("/products/product-id/{product_id}")
async def patch_product(request: Request, product_id: str) -> dict[str, Any]:
    """Create or update by the store's product id (lists as JSON arrays)."""
    state = state_of(request)
    auth = caller(request, "product:write")
    body = json_object(await json_body(request))
    given = body.get("productId")
    if given is not None and given != product_id:
        raise ApiError(422, "productId in the body differs from the path", validation_errors=[("productId", "")])
    body["productId"] = product_id
    clean, errors = clean_product(body, state.settings.max_field_chars, None)
    if state.settings.strict_unknown_fields:
        unknown = [name for name in body if name not in PRODUCT_FIELDS]
        errors += [(name, "is not a product field") for name in unknown if body[name] not in (None, "")]
    with state.store.lock:
        current = state.store.get_entity("products", "product_id", auth.account_id, product_id)
        if current is None:
            missing = [n for n in ("name", "unitPrice", "productDetailUrl") if n not in clean]
            errors += [(n, "is required to create a product") for n in missing if not any(n == f for f, _ in errors)]
        if errors:
            raise ApiError(422, "; ".join(f"{p}: {r}" for p, r in errors[:5]), validation_errors=errors)
        url = clean.get("productDetailUrl")
        if url is not None and not url_in_domains(url, auth.domains):
            raise ApiError(
                400,
                f"The productDetailUrl {url} is outside the account's authorised domains",
                code="E0201",
                allowedDomains=auth.domains,
            )
        now = now_iso()
        base = current or {"id": new_id(), "createdAt": now}
        merged = {**base, **clean, "updatedAt": now}
        state.store.put_entities("products", "product_id", auth.account_id, [(product_id, merged)])
    return merged


@router.delete("/products/product-id/{product_id}", status_code=204)
async def delete_product(request: Request, product_id: str) -> Response:
    state = state_of(request)
    auth = caller(request, "product:delete")
    if not state.store.delete_entity("products", "product_id", auth.account_id, product_id):
        raise ApiError(404, f"Product {product_id} not found")
    return Response(status_code=204)


# --- purchases --------------------------------------------------------------------------------------------------
def _json_number(value: Any) -> float | int:
    """JSON numbers only (no numeric strings), finite and not negative."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return check_price(value)


Number = Annotated[float, PlainValidator(_json_number)]


class PurchaseProduct(BaseModel):
    model_config = ConfigDict(extra="allow")
    productId: str = Field(min_length=1)
    name: str = Field(min_length=1)
    productDetailUrl: str
    unitPrice: Number
    quantity: StrictInt = Field(ge=1)
    price: Number

    @field_validator("productDetailUrl")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            return check_url(value)
        except FieldError as exc:
            raise ValueError(str(exc)) from None


class PurchaseIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    purchaseId: str = Field(min_length=1, max_length=256)
    contactEmail: str
    cartId: str = Field(min_length=1)
    paymentMethod: str | None = None
    purchaseDate: str
    totalPrice: Number
    totalQuantity: StrictInt = Field(ge=0)
    products: list[PurchaseProduct] = Field(min_length=1)

    @field_validator("purchaseDate")
    @classmethod
    def _date(cls, value: str) -> str:
        try:
            return utc_iso(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None

    @field_validator("contactEmail")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return check_email(value)
        except FieldError as exc:
            raise ValueError(str(exc)) from None


@both(router, "/purchases", ["POST"], status_code=201)
async def create_purchase(request: Request) -> JSONResponse:
    state = state_of(request)
    auth = caller(request, "purchase:write")
    trigger = request.query_params.get("triggerPurchaseEvent", "true").lower()
    if trigger not in ("true", "false"):
        raise ApiError(
            422, "triggerPurchaseEvent must be true or false", validation_errors=[("triggerPurchaseEvent", "")]
        )
    purchase: PurchaseIn = parse_model(PurchaseIn, json_object(await json_body(request)))
    store = state.store
    email = purchase.contactEmail.lower()
    with store.lock:
        if store.get_entity("purchases", "purchase_id", auth.account_id, purchase.purchaseId) is not None:
            raise ApiError(state.settings.duplicate_purchase_status, f"Purchase {purchase.purchaseId} already exists")
        if store.get_entity("contacts", "email", auth.account_id, email) is None:
            raise ApiError(400, f"The contact {purchase.contactEmail} does not exist; create it first", code="E0101")
        outside = [p.productId for p in purchase.products if not url_in_domains(p.productDetailUrl, auth.domains)]
        if outside:
            raise ApiError(
                400,
                f"Product URL(s) outside the account's authorised domains ({', '.join(auth.domains)})",
                code="E0103",
                productIds=outside,
            )
        ids = [p.productId for p in purchase.products]
        known = store.get_entities("products", "product_id", auth.account_id, ids)
        missing = [pid for pid in dict.fromkeys(ids) if pid not in known]
        if missing:
            raise ApiError(
                400,
                f"Product(s) not in the catalog: {', '.join(missing)}; create them first",
                code="E0102",
                productIds=missing,
            )
        record = {
            "id": new_id(),
            **purchase.model_dump(exclude_none=True),
            "triggerPurchaseEvent": trigger == "true",
            "createdAt": now_iso(),
        }
        store.put_entities(
            "purchases",
            "purchase_id",
            auth.account_id,
            [(purchase.purchaseId, record)],
            extra_col="contact_email",
            extra=[email],
        )
        store.add_activity(
            auth.account_id,
            email,
            "purchase",
            record["purchaseDate"],
            {k: record[k] for k in ("purchaseId", "cartId", "totalPrice", "totalQuantity", "products")}
            | drop_none({"paymentMethod": record.get("paymentMethod")}),
        )
    return JSONResponse(record, status_code=201)


@router.get("/purchases/purchase-id/{purchase_id}")
async def get_purchase(request: Request, purchase_id: str) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, "purchase:read")
    data = state.store.get_entity("purchases", "purchase_id", auth.account_id, purchase_id)
    if data is None:
        raise ApiError(404, f"Purchase {purchase_id} not found")
    return data


@router.delete("/purchases/purchase-id/{purchase_id}", status_code=204)
async def delete_purchase(request: Request, purchase_id: str) -> Response:
    state = state_of(request)
    auth = caller(request, "purchase:delete")
    if not state.store.delete_entity("purchases", "purchase_id", auth.account_id, purchase_id):
        raise ApiError(404, f"Purchase {purchase_id} not found")
    state.store.delete_activities_of_purchase(auth.account_id, purchase_id)
    return Response(status_code=204)


# --- coupon sets and workflows -----------------------------------------------------------------------------------
def coupon_set_view(state: EmulatorState, data: dict[str, Any], lag: float | None = None) -> dict[str, Any]:
    """A CouponSet as the API shows it: counts as they were ``coupon_counts_lag_s`` ago (Connectif lags ~10 s)."""
    lag = state.settings.coupon_counts_lag_s if lag is None else lag
    quantity, assigned = state.store.code_counts(data["id"], time.time() - lag)
    workflows = [
        {"workflowId": w["id"]} for w in state.store.list_workflows(None) if data["id"] in w.get("couponSetIds", [])
    ]
    view: dict[str, Any] = {"id": data["id"], "name": data["name"], "type": data["type"]}
    if data["type"] == "single":
        view["code"] = data.get("code")
    else:
        view["quantity"] = quantity
        view["available"] = quantity - assigned
    view |= {"assigned": assigned, "usedInWorkflows": workflows, "createdAt": data["createdAt"]}
    view["updatedAt"] = data.get("updatedAt")
    return drop_none(view)


@both(router, "/coupon-sets", ["GET"])
async def list_coupon_sets(request: Request) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, "coupon-set:read")
    limit, skip = paging(request)
    items, total = state.store.list_coupon_sets_raw(auth.account_id, limit, skip)
    return page(request, [coupon_set_view(state, s) for s in items], total, limit, skip)


@router.get("/coupon-sets/{set_id}")
async def get_coupon_set(request: Request, set_id: str) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, "coupon-set:read")
    data = state.store.get_coupon_set_raw(set_id, auth.account_id)
    if data is None:
        raise ApiError(404, f"Coupon set {set_id} not found")
    return coupon_set_view(state, data)


@router.get("/workflows/{workflow_id}")
async def get_workflow(request: Request, workflow_id: str) -> dict[str, Any]:
    state = state_of(request)
    auth = caller(request, "workflow:read")
    data = state.store.get_workflow(workflow_id, auth.account_id)
    if data is None:
        raise ApiError(404, f"Workflow {workflow_id} not found")
    return {"id": data["id"], "name": data["name"], "status": data["status"]}
