"""``/_emulator/``: what a local emulator adds so tests and benchmarks can drive it (contract section 11).

No authentication: it is a local test double. Everything takes ``?account=`` (default: the default
account). None of it is needed by the client code path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from emulator.api_entities import coupon_set_view
from emulator.common import json_body, json_object, parse_model, state_of, utc_iso
from emulator.errors import ApiError
from emulator.settings import Faults, Settings
from emulator.state import generate_key
from emulator.store import ALL_SCOPES, DEFAULT_ACCOUNT, new_id, now_iso
from emulator.validation import clean_contact, clean_product

router = APIRouter(prefix="/_emulator")


def _account(request: Request) -> str:
    account_id = request.query_params.get("account", DEFAULT_ACCOUNT)
    if state_of(request).store.get_account(account_id) is None:
        raise ApiError(404, f"No account {account_id}; create it with POST /_emulator/accounts")
    return account_id


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "apiKey": state_of(request).api_key}


@router.post("/reset")
async def reset(request: Request) -> dict[str, Any]:
    """Wipe all data, restore start-up settings (overridden by the JSON body, if any), clear faults and counters."""
    state = state_of(request)
    raw = await request.body()
    overrides = json_object(await json_body(request)) if raw.strip() else {}
    parse_model(Settings, overrides)
    state.reset(overrides)
    return {"settings": state.settings.model_dump(), "apiKey": state.api_key}


@router.get("/settings")
async def get_settings(request: Request) -> dict[str, Any]:
    state = state_of(request)
    account = state.store.get_account(DEFAULT_ACCOUNT) or {}
    return {**state.settings.model_dump(), "authorized_domains": account.get("authorizedDomains", [])}


@router.patch("/settings")
async def patch_settings(request: Request) -> dict[str, Any]:
    """Change some settings; ``authorized_domains`` changes the default account's domains."""
    state = state_of(request)
    body = json_object(await json_body(request))
    domains = body.pop("authorized_domains", None)
    if domains is not None:
        if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
            raise ApiError(422, "authorized_domains must be a list of domain names")
        account = state.store.get_account(DEFAULT_ACCOUNT) or {"name": "Default account", "blocked": False}
        state.store.put_account(DEFAULT_ACCOUNT, account["name"], domains, account["blocked"])
    state.settings = parse_model(Settings, {**state.settings.model_dump(), **body})
    return await get_settings(request)


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    state = state_of(request)
    return {**state.faults.model_dump(), "storm_active": state.storm_until > time.time()}


@router.put("/faults")
async def put_faults(request: Request) -> dict[str, Any]:
    """Replace the fault set (fields left out go back to 'no fault'); ``{}`` clears every fault."""
    state = state_of(request)
    state.set_faults(parse_model(Faults, json_object(await json_body(request))))
    return await get_faults(request)


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    state = state_of(request)
    data = state.stats.snapshot(state.limiter)
    data["queuedImports"] = state.store.count_jobs("imports", DEFAULT_ACCOUNT, ["queued", "inProgress"])
    return data


@router.post("/stats/reset")
async def reset_stats(request: Request) -> dict[str, Any]:
    state = state_of(request)
    state.stats.reset()
    state.limiter.reset()
    return state.stats.snapshot(state.limiter)


# --- accounts and keys ---------------------------------------------------------------------------------------
class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(default_factory=new_id, min_length=1)
    name: str = "Account"
    authorizedDomains: list[str] = Field(default_factory=lambda: ["example.com"])
    blocked: bool = False


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[str] = Field(default_factory=lambda: list(ALL_SCOPES))
    blocked: bool = False
    accountId: str = DEFAULT_ACCOUNT
    key: str | None = None


@router.get("/accounts")
async def list_accounts(request: Request) -> list[dict[str, Any]]:
    return state_of(request).store.list_accounts()


@router.post("/accounts", status_code=201)
async def create_account(request: Request) -> dict[str, Any]:
    data: AccountIn = parse_model(AccountIn, json_object(await json_body(request)))
    return state_of(request).store.put_account(data.id, data.name, data.authorizedDomains, data.blocked)


@router.patch("/accounts/{account_id}")
async def patch_account(request: Request, account_id: str) -> dict[str, Any]:
    store = state_of(request).store
    current = store.get_account(account_id)
    if current is None:
        raise ApiError(404, f"No account {account_id}")
    merged = parse_model(AccountIn, {**current, **json_object(await json_body(request)), "id": account_id})
    return store.put_account(account_id, merged.name, merged.authorizedDomains, merged.blocked)


@router.get("/keys")
async def list_keys(request: Request) -> list[dict[str, Any]]:
    return state_of(request).store.list_keys()


@router.post("/keys", status_code=201)
async def create_key(request: Request) -> dict[str, Any]:
    """A new key for an account with the given scopes (default: all); ``blocked`` keys answer 403."""
    store = state_of(request).store
    data: KeyIn = parse_model(KeyIn, json_object(await json_body(request)))
    unknown = [s for s in data.scopes if s not in ALL_SCOPES]
    if unknown:
        raise ApiError(422, f"Unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}")
    if store.get_account(data.accountId) is None:
        raise ApiError(404, f"No account {data.accountId}")
    return store.put_key(data.key or generate_key(), data.accountId, data.scopes, data.blocked)


# --- read back and seed stored data ---------------------------------------------------------------------------
@router.get("/contacts")
async def contacts(request: Request) -> list[dict[str, Any]]:
    state = state_of(request)
    account = _account(request)
    aggregates = state.store.all_purchase_aggregates(account)
    none = state.store.no_purchases()
    return [{**c, **aggregates.get(c["_email"].lower(), none)} for c in state.store.iter_entities("contacts", account)]


Cleaner = Callable[[dict[str, Any], int], tuple[dict[str, Any], list[tuple[str, str]]]]


async def _seed(
    request: Request,
    *,
    noun: str,
    clean: Cleaner,
    required: str,
    key: Callable[[Any], Any],
    stamps: tuple[str, str],
    table: str,
    key_column: str,
) -> dict[str, Any]:
    """Seed a JSON list of entities, all or nothing: 422 naming the first bad item and its fields."""
    state = state_of(request)
    account = _account(request)
    body = await json_body(request)
    if not isinstance(body, list):
        raise ApiError(422, f"Send a JSON list of {noun}s")
    items = []
    now = now_iso()
    for index, raw in enumerate(body):
        cleaned, errors = clean(json_object(raw), state.settings.max_field_chars)
        if required not in cleaned:
            errors.append((required, "is required"))
        if errors:
            raise ApiError(422, f"{noun} {index}: {errors}", validation_errors=[(f"{index}.{f}", e) for f, e in errors])
        items.append((key(cleaned[required]), {"id": new_id(), **cleaned, stamps[0]: now, stamps[1]: now}))
    state.store.put_entities(table, key_column, account, items)
    return {"created": len(items)}


@router.post("/contacts", status_code=201)
async def seed_contacts(request: Request) -> dict[str, Any]:
    """Seed contacts (a JSON list of contact objects with ``_email``), replacing same-email contacts."""
    return await _seed(
        request,
        noun="contact",
        clean=lambda raw, max_chars: clean_contact(raw, max_chars, strict=True),
        required="_email",
        key=str.lower,
        stamps=("_createdAt", "_updatedAt"),
        table="contacts",
        key_column="email",
    )


@router.get("/products")
async def products(request: Request) -> list[dict[str, Any]]:
    items, _ = state_of(request).store.list_entities("products", _account(request))
    return list(reversed(items))


@router.post("/products", status_code=201)
async def seed_products(request: Request) -> dict[str, Any]:
    """Seed products (a JSON list of product objects); the domain check is skipped on purpose."""
    return await _seed(
        request,
        noun="product",
        clean=lambda raw, max_chars: clean_product(raw, max_chars, None),
        required="productId",
        key=lambda product_id: product_id,
        stamps=("createdAt", "updatedAt"),
        table="products",
        key_column="product_id",
    )


@router.get("/purchases")
async def purchases(request: Request) -> list[dict[str, Any]]:
    items, _ = state_of(request).store.list_entities("purchases", _account(request))
    return list(reversed(items))


@router.get("/activities")
async def activities(request: Request) -> list[dict[str, Any]]:
    return state_of(request).store.activities(_account(request))


class ActivityIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    contactEmail: str
    type: str = Field(min_length=1)
    date: str = Field(default_factory=now_iso)


@router.post("/activities", status_code=201)
async def seed_activities(request: Request) -> dict[str, Any]:
    """Seed activities (login, register, email-opened...) that activity exports then include."""
    state = state_of(request)
    account = _account(request)
    body = await json_body(request)
    if not isinstance(body, list):
        raise ApiError(422, "Send a JSON list of activities")
    created = []
    for raw in body:
        item: ActivityIn = parse_model(ActivityIn, raw)
        try:
            when = utc_iso(item.date)
        except ValueError:
            raise ApiError(422, f"date {item.date!r} is not an ISO 8601 date-time") from None
        extra = dict(item.model_extra or {})
        created.append(state.store.add_activity(account, item.contactEmail.lower(), item.type, when, extra))
    return {"created": len(created)}


@router.get("/imports")
async def imports(request: Request) -> list[dict[str, Any]]:
    items, _ = state_of(request).store.list_jobs("imports", _account(request), -1, 0)
    return list(reversed(items))


@router.post("/imports/{import_id}/cancel")
async def cancel_import(request: Request, import_id: str) -> dict[str, Any]:
    """Cancel a queued or running import, as a user could from Connectif's UI."""
    store = state_of(request).store
    job = store.get_job("imports", import_id)
    if job is None:
        raise ApiError(404, f"No import {import_id}")
    if job["status"] in ("queued", "inProgress"):
        store.update_job("imports", import_id, status="cancelled", cancelledAt=now_iso())
    return store.get_job("imports", import_id) or {}


@router.get("/exports")
async def exports(request: Request) -> list[dict[str, Any]]:
    items, _ = state_of(request).store.list_jobs("exports", _account(request), -1, 0)
    return list(reversed(items))


class CouponSetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(default_factory=new_id)
    name: str = "Coupons"
    type: str = Field("multiple", pattern="^(single|multiple)$")
    code: str | None = None
    codes: list[str] = Field(default_factory=list)


@router.get("/coupon-sets")
async def coupon_sets(request: Request) -> list[dict[str, Any]]:
    state = state_of(request)
    items, _ = state.store.list_coupon_sets_raw(_account(request))
    return [coupon_set_view(state, s, lag=0) for s in reversed(items)]


@router.post("/coupon-sets", status_code=201)
async def create_coupon_set(request: Request) -> dict[str, Any]:
    """Create a coupon set (``single`` with ``code``, or ``multiple`` with optional initial ``codes``)."""
    state = state_of(request)
    account = _account(request)
    data: CouponSetIn = parse_model(CouponSetIn, json_object(await json_body(request)))
    if data.type == "single" and not data.code:
        raise ApiError(422, "A single coupon set needs a code", validation_errors=[("code", "is required")])
    now = now_iso()
    raw = {"id": data.id, "name": data.name, "type": data.type, "code": data.code, "createdAt": now, "updatedAt": now}
    state.store.put_coupon_set(account, raw)
    if data.codes:
        state.store.add_codes(data.id, data.codes)
    return coupon_set_view(state, raw, lag=0)


@router.get("/coupon-sets/{set_id}/codes")
async def coupon_codes(request: Request, set_id: str) -> list[dict[str, Any]]:
    store = state_of(request).store
    if store.get_coupon_set_raw(set_id) is None:
        raise ApiError(404, f"No coupon set {set_id}")
    return store.list_codes(set_id)


@router.post("/coupon-sets/{set_id}/assign")
async def assign_codes(request: Request, set_id: str) -> dict[str, Any]:
    """Mark ``{"count": n}`` available codes as assigned, as a running workflow would."""
    state = state_of(request)
    if state.store.get_coupon_set_raw(set_id) is None:
        raise ApiError(404, f"No coupon set {set_id}")
    body = json_object(await json_body(request))
    count = body.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ApiError(422, "count must be a non-negative integer")
    return {"assigned": state.store.assign_codes(set_id, count)}


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(default_factory=new_id)
    name: str = "Workflow"
    status: str = Field("active", pattern="^(active|inactive|draft|finished)$")
    couponSetIds: list[str] = Field(default_factory=list)


@router.get("/workflows")
async def workflows(request: Request) -> list[dict[str, Any]]:
    return state_of(request).store.list_workflows(_account(request))


@router.post("/workflows", status_code=201)
async def create_workflow(request: Request) -> dict[str, Any]:
    """Create or replace a workflow; ``couponSetIds`` makes the sets list it in ``usedInWorkflows``."""
    state = state_of(request)
    account = _account(request)
    data: WorkflowIn = parse_model(WorkflowIn, json_object(await json_body(request)))
    record = data.model_dump()
    state.store.put_workflow(account, record)
    return record


@router.delete("/data", status_code=204)
async def wipe_data(request: Request) -> Response:
    """Same as reset but keeps settings and faults."""
    state = state_of(request)
    state.store.wipe()
    state.seed_defaults()
    return Response(status_code=204)
