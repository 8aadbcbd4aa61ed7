"""The sample ERP: a realistic schema and a deterministic generator of clean and dirty data.

It is the embedded default source of the demo, the tests and the benchmarks, and the data behind
``connectif-sync sample-erp``. It lives outside the sync library because it is test data, not sync logic (the
library imports it for that command only). Everything is produced from ``(seed, sizes, now)`` only, so two runs
with the same arguments write the same rows at any URL.

Modules: :mod:`sample_erp.schema` (the tables), :mod:`sample_erp.rows` (the rows, clean and dirty),
:mod:`sample_erp.writer` (bulk loading per database); :func:`generate` ties them together.

Tables (all created by :func:`create_schema`):

``customers``
    ``id`` (PK), ``customer_code`` (text with leading zeros, kept as the external id), ``email``,
    ``first_name``, ``last_name``, ``birthdate`` (date), ``mobile_phone`` (national or international,
    with spaces/dashes), ``country`` (ISO 3166 alpha-2), ``loyalty_points`` (text: legacy ERPs store
    numbers as text, sometimes zero-padded), ``newsletter_consent`` / ``sms_consent`` (boolean, NULL =
    never asked), ``favourite_categories`` (comma-separated custom attribute), ``customer_tier``,
    ``created_at``, ``updated_at`` (indexed).
``categories``
    ``id``, ``parent_id`` (self reference: the hierarchy), ``name``.
``products``
    ``id``, ``sku`` (text, zero-padded), ``name``, ``description``, ``url``, ``image_url``, ``price``
    (with VAT), ``price_without_vat``, ``original_price``, ``discount_percent``, ``stock`` (text),
    ``category_id``, ``brand``, ``tags`` (comma-separated), ``rating``, ``published_at``, ``updated_at``.
``orders`` / ``order_lines``
    ``orders.id``, ``order_number``, ``customer_id``, ``ordered_at`` (indexed), ``status``
    (``paid`` | ``cancelled``), ``payment_method``, ``cart_id``, ``updated_at``; ``order_lines.id``,
    ``order_id`` (indexed), ``product_id``, ``quantity``, ``unit_price``.
``coupon_pool``
    One row per code of a Connectif coupon set: ``id``, ``coupon_set_id`` (the Connectif set id),
    ``code``, ``status`` (``unused`` | ``used``), ``created_at``, ``used_at`` (set when Connectif confirmed
    the code's import). Index on ``(coupon_set_id, status)``.
``erasure_requests``
    ``id``, ``email`` (as typed by the requester: any case, stray spaces), ``requested_at``, ``done_at``
    (NULL until the contact was deleted from Connectif), ``note``.

Dirty data is injected at ``dirty_rate`` (default 2%) on even ids only, so that the row before a dirty
row is always clean (a ``duplicate_email`` copies the previous customer's email in another case, with
spaces around it; the earlier row wins). :class:`GenerationSummary` lists every dirty id per kind, so
tests can assert exact outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from sample_erp.rows import (
    BATCH,
    CATEGORY_TREE,
    COUPON_DIRT,
    CUSTOMER_DIRT,
    DEFAULT_NOW,
    INVALID_EMAILS,
    PRODUCT_DIRT,
    SPECIAL_DESCRIPTION,
    SPECIAL_LAST,
    UNICODE_FIRST,
    Columns,
    Rows,
    clean_email,
    coupon_rows,
    coupon_set_ids,
    customer_rows,
    erasure_rows,
    order_rows,
    product_rows,
)
from sample_erp.schema import (
    TABLES,
    categories,
    coupon_pool,
    create_indexes,
    create_schema,
    customers,
    erasure_requests,
    order_lines,
    orders,
    products,
)
from sample_erp.writer import Writer

__all__ = [
    "CATEGORY_TREE",
    "COUPON_DIRT",
    "CUSTOMER_DIRT",
    "DEFAULT_NOW",
    "INVALID_EMAILS",
    "PRODUCT_DIRT",
    "SPECIAL_DESCRIPTION",
    "SPECIAL_LAST",
    "TABLES",
    "UNICODE_FIRST",
    "GenerationSummary",
    "Writer",
    "categories",
    "clean_email",
    "coupon_pool",
    "coupon_set_ids",
    "create_indexes",
    "create_schema",
    "customer_rows",
    "customers",
    "erasure_requests",
    "generate",
    "order_lines",
    "orders",
    "products",
]


@dataclass
class GenerationSummary:
    """What :func:`generate` wrote: row counts per table and the ids of every dirty row per kind."""

    url: str
    seed: int
    now: str
    rows: dict[str, int] = field(default_factory=dict)
    dirty: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    coupon_sets: list[str] = field(default_factory=list)

    def as_dict(self, with_ids: bool = False) -> dict[str, Any]:
        """JSON-friendly form; dirty ids are replaced by counts unless ``with_ids``."""
        return {
            "url": self.url,
            "seed": self.seed,
            "now": self.now,
            "rows": dict(self.rows),
            "dirty": {
                t: {k: (list(v) if with_ids else len(v)) for k, v in kinds.items()} for t, kinds in self.dirty.items()
            },
            "coupon_sets": list(self.coupon_sets),
        }


def generate(
    url: str,
    *,
    contacts: int = 10_000,
    products: int = 1_000,
    orders: int = 2_000,
    coupons: int = 600,
    coupon_sets: int = 3,
    erasures: int | None = None,
    seed: int = 42,
    dirty_rate: float = 0.02,
    order_days: float = 7.0,
    now: datetime | None = None,
) -> GenerationSummary:
    """(Re)create the sample ERP at ``url`` and fill it; the same arguments always give the same rows.

    ``orders`` are spread over the ``order_days`` days before ``now`` (default :data:`DEFAULT_NOW`); every
    other timestamp is also relative to ``now``. ``dirty_rate`` is the share of rows made dirty per table.
    """
    plan = _plan(
        contacts=contacts, products=products, orders=orders, coupons=coupons, coupon_sets=coupon_sets,
        erasures=erasures, seed=seed, dirty_rate=dirty_rate, order_days=order_days, now=now,
    )  # fmt: skip
    summary = GenerationSummary(url=_safe_url(url), seed=seed, now=plan.now.isoformat(), coupon_sets=plan.sets)
    engine = _engine(url)
    writer: Writer | None = None
    try:
        create_schema(engine, indexes=False)
        engine.dispose()  # no sqlite3 connection stays open while ADBC's own SQLite library writes the file
        writer = Writer(engine)
        _write_rows(writer, plan, summary)
        writer.close()
        create_indexes(engine)  # after the rows: loading into indexed tables is slower
    finally:
        if writer is not None:
            writer.close()
        engine.dispose()
    return summary


@dataclass(frozen=True)
class _Plan:
    """The checked arguments of :func:`generate`, defaults resolved: everything the rows are made from."""

    seed: int
    contacts: int
    products: int
    orders: int
    coupons: int  # 0 when there is no coupon set to put codes in
    erasures: int
    dirty_rate: float
    order_days: float
    now: datetime  # naive UTC, whole seconds
    sets: list[str]  # the Connectif coupon set ids


def _plan(
    *, contacts: int, products: int, orders: int, coupons: int, coupon_sets: int, erasures: int | None, seed: int,
    dirty_rate: float, order_days: float, now: datetime | None,
) -> _Plan:  # fmt: skip
    """Refuse sizes that make no ERP, before anything is written (the database is recreated)."""
    if contacts < 1 or products < 1:
        raise ValueError("the sample ERP needs at least 1 contact and 1 product (orders reference them)")
    counts = {"orders": orders, "coupons": coupons, "coupon_sets": coupon_sets, "erasures": erasures or 0}
    negative = [f"{name}={value}" for name, value in counts.items() if value < 0]
    if negative:
        raise ValueError(f"row counts cannot be negative ({', '.join(negative)}): use 0 for an empty table")
    if not 0 <= dirty_rate <= 0.5:
        raise ValueError(f"dirty_rate must be between 0 and 0.5, got {dirty_rate}")
    sets = coupon_set_ids(seed, coupon_sets) if coupon_sets else []
    return _Plan(
        seed=seed, contacts=contacts, products=products, orders=orders, coupons=coupons if sets else 0,
        erasures=erasures if erasures is not None else max(3, contacts // 1000), dirty_rate=dirty_rate,
        order_days=order_days, now=_naive_utc(now or DEFAULT_NOW), sets=sets,
    )  # fmt: skip


def _naive_utc(now: datetime) -> datetime:
    """``now`` as the naive UTC time in whole seconds every generated timestamp is relative to."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now.replace(microsecond=0)


def _engine(url: str) -> sa.Engine:
    u = sa.make_url(url)
    # PyMySQL loads the rows with LOAD DATA LOCAL INFILE (see writer._load_data_mysql), which the client must allow.
    mysql = u.get_backend_name() in ("mysql", "mariadb") and u.get_driver_name() == "pymysql"
    return sa.create_engine(url, connect_args={"local_infile": True} if mysql else {})


def _write_rows(writer: Writer, plan: _Plan, summary: GenerationSummary) -> None:
    """Every table's rows, in the order their foreign keys need; counts and dirty ids go into ``summary``."""
    seed, now, rate = plan.seed, plan.now, plan.dirty_rate
    writer.write(categories, [tuple(c) for c in CATEGORY_TREE])
    summary.rows["categories"] = len(CATEGORY_TREE)
    summary.dirty["customers"] = _write_batches(
        writer, customers, plan.contacts, CUSTOMER_DIRT, lambda a, b: customer_rows(seed, a, b, now, rate)
    )
    summary.rows["customers"] = plan.contacts
    summary.dirty["products"] = _write_batches(
        writer, products, plan.products, PRODUCT_DIRT, lambda a, b: product_rows(seed, a, b, now, rate)
    )
    summary.rows["products"] = plan.products
    summary.rows["orders"] = plan.orders
    summary.rows["order_lines"] = _write_orders(writer, plan)
    summary.dirty["coupon_pool"] = _write_batches(
        writer, coupon_pool, plan.coupons, COUPON_DIRT, lambda a, b: coupon_rows(seed, a, b, now, plan.sets, rate)
    )
    summary.rows["coupon_pool"] = plan.coupons
    writer.write(erasure_requests, erasure_rows(seed, plan.erasures, now, plan.contacts))
    summary.rows["erasure_requests"] = plan.erasures


#: Rows ``[start, stop)`` of a table and the ids of its dirty rows per kind.
RowMaker = Callable[[int, int], tuple[Columns | Rows, dict[str, list[int]]]]


def _write_batches(
    writer: Writer, table: sa.Table, total: int, kinds: Sequence[str], make: RowMaker
) -> dict[str, list[int]]:
    """Write ``total`` rows of ``table`` :data:`BATCH` at a time; the dirty ids of each kind, in id order."""
    dirty: dict[str, list[int]] = {kind: [] for kind in kinds}
    for start, stop in _batches(total):
        rows, batch_dirty = make(start, stop)
        writer.write(table, rows)
        for kind, ids in batch_dirty.items():
            dirty[kind].extend(ids)
    return dirty


def _write_orders(writer: Writer, plan: _Plan) -> int:
    """The orders and their lines; the number of lines (their ids run on across batches)."""
    line_id = 0
    for start, stop in _batches(plan.orders):
        order_batch, lines = order_rows(
            plan.seed, start, stop, plan.now, plan.contacts, plan.products, plan.order_days, line_id
        )
        line_id += len(lines)
        writer.write(orders, order_batch)
        writer.write(order_lines, lines)
    return line_id


def _batches(total: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, BATCH):
        yield start, min(total, start + BATCH)


def _safe_url(url: str) -> str:
    """The URL without its password, for summaries and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
