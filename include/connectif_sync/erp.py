"""The sample ERP: a realistic schema and a deterministic generator of clean and dirty data.

It is the embedded default source of the demo, the tests and the benchmarks. Everything is produced from
``(seed, sizes, now)`` only, so two runs with the same arguments write the same rows at any URL.

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

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from phonenumbers import country_code_for_region

BATCH = 20_000
"""Rows generated and inserted at a time. Fixed (not a setting) so that data does not depend on it."""

metadata = sa.MetaData()

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_code", sa.String(20), nullable=False),
    sa.Column("email", sa.String(400)),
    sa.Column("first_name", sa.String(1000)),
    sa.Column("last_name", sa.String(1000)),
    sa.Column("birthdate", sa.Date),
    sa.Column("mobile_phone", sa.String(40)),
    sa.Column("country", sa.String(2)),
    sa.Column("loyalty_points", sa.String(12)),
    sa.Column("newsletter_consent", sa.Boolean),
    sa.Column("sms_consent", sa.Boolean),
    sa.Column("favourite_categories", sa.String(200)),
    sa.Column("customer_tier", sa.String(20)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)

categories = sa.Table(
    "categories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("categories.id")),
    sa.Column("name", sa.String(100), nullable=False),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sku", sa.String(32), nullable=False),
    sa.Column("name", sa.String(1000)),
    sa.Column("description", sa.Text),
    sa.Column("url", sa.String(500)),
    sa.Column("image_url", sa.String(500)),
    sa.Column("price", sa.Numeric(12, 2)),
    sa.Column("price_without_vat", sa.Numeric(12, 2)),
    sa.Column("original_price", sa.Numeric(12, 2)),
    sa.Column("discount_percent", sa.Numeric(5, 2)),
    sa.Column("stock", sa.String(12)),
    sa.Column("category_id", sa.Integer, sa.ForeignKey("categories.id")),
    sa.Column("brand", sa.String(100)),
    sa.Column("tags", sa.String(200)),
    sa.Column("rating", sa.Numeric(3, 1)),
    sa.Column("published_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_number", sa.String(20), nullable=False),
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("ordered_at", sa.DateTime, nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("payment_method", sa.String(20)),
    sa.Column("cart_id", sa.String(40)),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False, index=True),
    sa.Column("product_id", sa.Integer, sa.ForeignKey("products.id"), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price", sa.Numeric(12, 2), nullable=False),
)

coupon_pool = sa.Table(
    "coupon_pool",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("coupon_set_id", sa.String(24), nullable=False),
    sa.Column("code", sa.String(100)),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("used_at", sa.DateTime),
    sa.Index("ix_coupon_pool_set_status", "coupon_set_id", "status"),
)

erasure_requests = sa.Table(
    "erasure_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(400), nullable=False),
    sa.Column("requested_at", sa.DateTime, nullable=False),
    sa.Column("done_at", sa.DateTime),
    sa.Column("note", sa.String(200)),
)

_PRODUCTS = products  # generate() has parameters of the same names
_ORDERS = orders

TABLES: tuple[sa.Table, ...] = (
    customers,
    categories,
    products,
    orders,
    order_lines,
    coupon_pool,
    erasure_requests,
)

DEFAULT_NOW = datetime(2026, 1, 1)
"""Anchor of every generated timestamp unless ``now`` is given (keeps the default output reproducible)."""

FIRST = [
    ("Ana", "ana"),
    ("Luis", "luis"),
    ("María", "maria"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Søren", "soren"),
    ("Łukasz", "lukasz"),
    ("Jürgen", "jurgen"),
    ("Chloé", "chloe"),
    ("Lucía", "lucia"),
    ("Pablo", "pablo"),
    ("Emma", "emma"),
    ("Noah", "noah"),
    ("Olivia", "olivia"),
    ("李", "li"),
    ("Мария", "mariya"),
    ("Seán", "sean"),
    ("Ines", "ines"),
    ("Marco", "marco"),
    ("Aïcha", "aicha"),
]
LAST = [
    ("García", "garcia"),
    ("Martínez", "martinez"),
    ("O'Neil", "oneil"),
    ("Müller", "muller"),
    ("Dubois", "dubois"),
    ("Rossi", "rossi"),
    ("Smith", "smith"),
    ("Nowak", "nowak"),
    ("Silva", "silva"),
    ("Fernández", "fernandez"),
    ("Brown", "brown"),
    ("Wang", "wang"),
    ("Иванов", "ivanov"),
    ("López", "lopez"),
    ("Schmidt", "schmidt"),
    ("Ruiz", "ruiz"),
]
DOMAINS = ["example.com", "mail.example.org", "correo.example.es", "example.net"]
COUNTRIES = ["ES", "ES", "ES", "FR", "DE", "IT", "PT", "GB", "MX", "US"]
# (national mobile number format, international prefix) per country: enough variety to exercise shaping.
PHONE_PREFIX = {"ES": "6", "FR": "06", "DE": "015", "IT": "3", "PT": "9", "GB": "07", "MX": "55", "US": "415"}
TIERS = ["bronze", "silver", "gold", "platinum"]
FAV = ["shoes", "running", "outdoor", "kids", "home", "sale", "new-in"]
PAYMENT = ["card", "paypal", "bizum", "transfer", "cash-on-delivery"]

CATEGORY_TREE: list[tuple[int, int | None, str]] = [
    (1, None, "Shoes"),
    (2, 1, "Running"),
    (3, 1, "Trail"),
    (4, None, "Clothing"),
    (5, 4, "Men"),
    (6, 5, "Shirts"),
    (7, 4, "Women"),
    (8, 7, "Dresses"),
    (9, None, "Accessories"),
    (10, 9, "Bags"),
    (11, None, "Home & Garden"),
    (12, 11, "Kitchen"),
    (13, None, "Niños"),
    (14, 13, "Calzado"),
]
LEAF_CATEGORIES = [2, 3, 6, 8, 10, 12, 14, 9]
ADJECTIVES = ["Classic", "Urban", "Trail", "Light", "Pro", "Eco", "Señorial", "Café", "Nordic", "Zen"]
NOUNS = ["Runner", "Shirt", "Dress", "Backpack", "Mug", "Sneaker", "Jacket", "Bottle", "Sandal", "Tote"]
BRANDS = ["Acme", "Montaña", "Zephyr", "Ñandú", "Kestrel", "Orbit"]
TAGS = ["summer", "winter", "sale", "new", "eco", "bestseller"]

CUSTOMER_DIRT = (
    "invalid_email",
    "duplicate_email",
    "null_email",
    "long_name",
    "special_chars",
    "unicode",
    "leading_zeros",
    "invalid_phone",
)
PRODUCT_DIRT = (
    "negative_price",
    "null_name",
    "null_price",
    "special_chars",
    "long_name",
    "leading_zeros",
    "duplicate_sku",
)
COUPON_DIRT = ("duplicate_code", "special_chars", "null_code")

INVALID_EMAILS = ["john.doe@", "no-at-sign.example.com", "two words@example.com", "x@@example.com", "@example.com"]
SPECIAL_LAST = 'O"Brien, Jr.\nde la Peña; |x|'
SPECIAL_DESCRIPTION = 'Says "hello", then;\nnew line | pipe\r\nand a tab\t.'
UNICODE_FIRST = "Zoë 李 🎉 Ñúñez"


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


def create_schema(engine: sa.Engine, replace: bool = True, indexes: bool = True) -> None:
    """Create the sample ERP tables (dropping them first when ``replace``); ``indexes=False`` defers the
    secondary indexes (see :func:`create_indexes`), which makes a bulk load several times faster."""
    if replace:
        metadata.drop_all(engine)
    metadata.create_all(engine)
    if not indexes:
        mysql = engine.dialect.name in ("mysql", "mariadb")
        for table in TABLES:
            for index in table.indexes:
                if mysql and any(c.foreign_keys for c in index.columns):
                    continue  # MySQL needs an index on a foreign key column and refuses to drop it
                index.drop(engine)


def create_indexes(engine: sa.Engine) -> None:
    """Create the secondary indexes that :func:`create_schema` deferred."""
    for table in TABLES:
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def coupon_set_ids(seed: int, count: int) -> list[str]:
    """Deterministic Connectif-like (24 hex) coupon set ids for the pool."""
    return [hashlib.sha256(f"coupon-set-{seed}-{i}".encode()).hexdigest()[:24] for i in range(count)]


def product_price_without_vat(ids: np.ndarray) -> np.ndarray:
    """A product's net price as a pure function of its id, so order lines can quote it without a lookup."""
    h = (ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    return np.round(4.99 + (h % np.uint64(29500)).astype(np.float64) / 100.0, 2)


def _fmt_ts(base: datetime, seconds: np.ndarray) -> list[str]:
    """Timestamps as ``YYYY-MM-DD HH:MM:SS`` text, which SQLite, PostgreSQL and SQLAlchemy all read."""
    epoch = np.datetime64(base.replace(tzinfo=None), "s")
    text = np.datetime_as_string(epoch - seconds.astype("timedelta64[s]"), unit="s").tolist()
    return [t.replace("T", " ") for t in text]


def _rng(seed: int, table: int, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, table, batch])


def _dirty_kinds(rng: np.random.Generator, ids: np.ndarray, rate: float, kinds: Sequence[str]) -> list[str | None]:
    hit = (ids % 2 == 0) & (rng.random(len(ids)) < rate * 2)
    which = rng.integers(len(kinds), size=len(ids))
    return [kinds[w] if h else None for h, w in zip(hit.tolist(), which.tolist(), strict=True)]


def _email(i: int, f: int, last: int, d: int) -> str:
    return f"{FIRST[f][1]}.{LAST[last][1]}.{i}@{DOMAINS[d]}"


Rows = list[tuple[Any, ...]]
Columns = dict[str, list[Any]]


def _mix(seed: int, ids: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 of (seed, id, salt): per-row draws that do not depend on how rows are batched."""
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64((seed * 1_000_003 + salt) % 2**63)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _name_draws(seed: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-name, last-name and domain indexes of customers ``ids``."""
    return (
        (_mix(seed, ids, 1) % np.uint64(len(FIRST))).astype(np.int64),
        (_mix(seed, ids, 2) % np.uint64(len(LAST))).astype(np.int64),
        (_mix(seed, ids, 3) % np.uint64(len(DOMAINS))).astype(np.int64),
    )


def clean_email(seed: int, i: int) -> str:
    """The email customer ``i`` has when it is not dirty (used for duplicates and erasure requests)."""
    f, la, d = _name_draws(seed, np.array([i]))
    return _email(i, int(f[0]), int(la[0]), int(d[0]))


def _combos(words: Sequence[str]) -> np.ndarray:
    """Every comma-joined subset of ``words``, indexed by bit mask (None for the empty set)."""
    return np.array(
        [",".join(w for b, w in enumerate(words) if m >> b & 1) or None for m in range(1 << len(words))], dtype=object
    )


_FAV_COMBOS = _combos(FAV)
_TAG_COMBOS = _combos(TAGS)
_COUNTRY_CODE = {c: str(country_code_for_region(c)) for c in COUNTRIES}


def _phones(rng: np.random.Generator, countries: np.ndarray, n: int) -> list[str | None]:
    """Mobile numbers as people type them: national with spaces or dashes, ``+CC ...`` or ``00CC...``."""
    number = rng.integers(10_000_000, 99_999_999, size=n).tolist()
    style = rng.integers(4, size=n).tolist()
    has = (rng.random(n) < 0.8).tolist()
    out: list[str | None] = []
    for c, num_i, st, h in zip(countries.tolist(), number, style, has, strict=True):
        if not h:
            out.append(None)
            continue
        num = f"{PHONE_PREFIX[c]}{num_i}"
        if st == 0:
            out.append(f"{num[:3]} {num[3:6]} {num[6:]}")
        elif st == 1:
            out.append(f"{num[:3]}-{num[3:6]}-{num[6:]}")
        elif st == 2:
            out.append(f"+{_COUNTRY_CODE[c]} {num.lstrip('0')}")
        else:
            out.append(f"00{_COUNTRY_CODE[c]}{num.lstrip('0')}")
    return out


def _tristate(v: np.ndarray) -> list[bool | None]:
    return [None if x == 2 else bool(x) for x in v.tolist()]


def customer_rows(seed: int, start: int, stop: int, now: datetime, rate: float) -> tuple[Columns, dict[str, list[int]]]:
    """Customers ``start+1 .. stop`` as columns, and their dirty ids per kind."""
    rng = _rng(seed, 1, start // BATCH)
    n = stop - start
    ids = np.arange(start + 1, stop + 1)
    f, la, d = _name_draws(seed, ids)
    countries = np.array(COUNTRIES, dtype=object)[rng.integers(len(COUNTRIES), size=n)]
    phones = _phones(rng, countries, n)
    birth_days = rng.integers(18 * 365, 80 * 365, size=n)
    has_birth = rng.random(n) < 0.85
    points = rng.integers(0, 5000, size=n)
    consent = rng.integers(3, size=n)
    sms = rng.integers(3, size=n)
    fav_mask = rng.integers(0, 1 << len(FAV), size=n)
    tier = rng.integers(len(TIERS), size=n)
    created = rng.integers(30 * 86400, 1500 * 86400, size=n)
    updated = (created * rng.random(n)).astype(np.int64)
    kinds = _dirty_kinds(rng, ids, rate, CUSTOMER_DIRT)
    first_ascii = np.array([x[1] for x in FIRST], dtype=object)[f]
    last_ascii = np.array([x[1] for x in LAST], dtype=object)[la]
    domains = np.array(DOMAINS, dtype=object)[d]
    id_list = ids.tolist()
    emails: list[str | None] = [
        f"{a}.{b}.{i}@{c}"
        for a, b, i, c in zip(first_ascii.tolist(), last_ascii.tolist(), id_list, domains.tolist(), strict=True)
    ]
    first: list[str | None] = np.array([x[0] for x in FIRST], dtype=object)[f].tolist()
    last: list[str | None] = np.array([x[0] for x in LAST], dtype=object)[la].tolist()
    pts = [str(p) for p in points.tolist()]
    birth = np.datetime_as_string(np.datetime64(now.date(), "D") - birth_days.astype("timedelta64[D]")).astype(object)
    birth[~has_birth] = None
    dirty: dict[str, list[int]] = {k: [] for k in CUSTOMER_DIRT}
    for k, kind in enumerate(kinds):
        if kind is None:
            continue
        i = id_list[k]
        dirty[kind].append(i)
        if kind == "invalid_email":
            emails[k] = INVALID_EMAILS[i % len(INVALID_EMAILS)]
        elif kind == "duplicate_email":
            # Same person typed again: previous customer's (clean, odd id) email in upper case, padded.
            emails[k] = f"  {clean_email(seed, i - 1).upper()} "
        elif kind == "null_email":
            emails[k] = None
        elif kind == "long_name":
            first[k] = "X" * 300
        elif kind == "special_chars":
            last[k] = SPECIAL_LAST
        elif kind == "unicode":
            first[k] = UNICODE_FIRST
        elif kind == "leading_zeros":
            pts[k] = "000" + pts[k]
        elif kind == "invalid_phone":
            phones[k] = "12ab"
    cols: Columns = {
        "id": id_list,
        "customer_code": [f"{i:09d}" for i in id_list],
        "email": emails,
        "first_name": first,
        "last_name": last,
        "birthdate": birth.tolist(),
        "mobile_phone": phones,
        "country": countries.tolist(),
        "loyalty_points": pts,
        "newsletter_consent": _tristate(consent),
        "sms_consent": _tristate(sms),
        "favourite_categories": _FAV_COMBOS[fav_mask].tolist(),
        "customer_tier": np.array(TIERS, dtype=object)[tier].tolist(),
        "created_at": _fmt_ts(now, created),
        "updated_at": _fmt_ts(now, updated),
    }
    return cols, dirty


def product_rows(seed: int, start: int, stop: int, now: datetime, rate: float) -> tuple[Rows, dict[str, list[int]]]:
    """Rows ``start+1 .. stop`` of ``products`` and their dirty ids per kind."""
    rng = _rng(seed, 2, start // BATCH)
    n = stop - start
    ids = np.arange(start + 1, stop + 1)
    adj = rng.integers(len(ADJECTIVES), size=n)
    noun = rng.integers(len(NOUNS), size=n)
    cat = rng.integers(len(LEAF_CATEGORIES), size=n)
    brand = rng.integers(len(BRANDS), size=n)
    tag_mask = rng.integers(0, 1 << len(TAGS), size=n)
    discount = rng.choice([0, 0, 0, 10, 15, 20, 50], size=n)
    stock = rng.integers(0, 300, size=n)
    rating = np.round(rng.uniform(1, 5, size=n), 1)
    published = rng.integers(0, 1000 * 86400, size=n)
    updated = (published * rng.random(n)).astype(np.int64)
    kinds = _dirty_kinds(rng, ids, rate, PRODUCT_DIRT)
    net = product_price_without_vat(ids)
    published_s = _fmt_ts(now, published)
    updated_s = _fmt_ts(now, updated)
    dirty: dict[str, list[int]] = {k: [] for k in PRODUCT_DIRT}
    rows: list[tuple[Any, ...]] = []
    for k in range(n):
        i = int(ids[k])
        sku = f"{i:07d}"
        name: str | None = f"{ADJECTIVES[adj[k]]} {NOUNS[noun[k]]} {i}"
        slug = f"{ADJECTIVES[adj[k]]}-{NOUNS[noun[k]]}".lower().replace("é", "e").replace("ñ", "n")
        pwv = float(net[k])
        price: float | None = round(pwv * 1.21, 2)
        disc = int(discount[k])
        original = round(pwv * 1.21 / (1 - disc / 100), 2) if disc else price
        desc = f"{name}: comfortable, durable and made to last."
        st = str(int(stock[k]))
        kind = kinds[k]
        if kind is not None:
            dirty[kind].append(i)
            if kind == "negative_price":
                price = -round(pwv * 1.21, 2)
            elif kind == "null_name":
                name = None
            elif kind == "null_price":
                price = None
            elif kind == "special_chars":
                desc = SPECIAL_DESCRIPTION
                name = f'{name} "Edición" 50% off, ya; |'
            elif kind == "long_name":
                name = "N" * 400
            elif kind == "leading_zeros":
                st = "00" + st
            elif kind == "duplicate_sku":
                sku = f"{i - 1:07d}"
        tags = ",".join(TAGS[b] for b in range(len(TAGS)) if int(tag_mask[k]) >> b & 1) or None
        rows.append(
            (
                i,
                sku,
                name,
                desc,
                f"https://shop.example.com/p/{i:07d}-{slug}",
                f"https://shop.example.com/img/{i:07d}.jpg",
                price,
                pwv,
                original,
                disc,
                st,
                LEAF_CATEGORIES[cat[k]],
                BRANDS[brand[k]],
                tags,
                float(rating[k]),
                published_s[k],
                updated_s[k],
            )
        )
    return rows, dirty


def order_rows(
    seed: int, start: int, stop: int, now: datetime, n_customers: int, n_products: int, days: float, line_start: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Orders ``start+1 .. stop`` and their lines (line ids from ``line_start + 1``)."""
    rng = _rng(seed, 3, start // BATCH)
    n = stop - start
    ids = np.arange(start + 1, stop + 1)
    cust = rng.integers(1, n_customers + 1, size=n)
    age = rng.integers(1, max(2, int(days * 86400)), size=n)
    cancelled = rng.random(n) < 0.03
    pay = rng.integers(len(PAYMENT), size=n)
    n_lines = rng.integers(1, 5, size=n)
    total_lines = int(n_lines.sum())
    prod = rng.integers(1, n_products + 1, size=total_lines)
    qty = rng.integers(1, 4, size=total_lines)
    price = np.round(product_price_without_vat(prod) * 1.21, 2)
    ordered_s = _fmt_ts(now, age)
    order_out: list[tuple[Any, ...]] = []
    for k in range(n):
        i = int(ids[k])
        order_out.append(
            (
                i,
                f"SO-{i:08d}",
                int(cust[k]),
                ordered_s[k],
                "cancelled" if cancelled[k] else "paid",
                PAYMENT[pay[k]],
                f"cart-{seed}-{i}",
                ordered_s[k],
            )
        )
    owner = np.repeat(ids, n_lines)
    line_out = [
        (line_start + j + 1, int(owner[j]), int(prod[j]), int(qty[j]), float(price[j])) for j in range(total_lines)
    ]
    return order_out, line_out


def coupon_rows(
    seed: int, start: int, stop: int, now: datetime, sets: list[str], rate: float
) -> tuple[list[tuple[Any, ...]], dict[str, list[int]]]:
    """Coupon pool rows ``start+1 .. stop`` spread over ``sets``."""
    rng = _rng(seed, 4, start // BATCH)
    n = stop - start
    ids = np.arange(start + 1, stop + 1)
    chars = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"))
    letters = chars[rng.integers(len(chars), size=(n, 8))]
    used = rng.random(n) < 0.2
    created = rng.integers(86400, 90 * 86400, size=n)
    created_s = _fmt_ts(now, created)
    used_s = _fmt_ts(now, created // 2)
    kinds = _dirty_kinds(rng, ids, rate, COUPON_DIRT)
    dirty: dict[str, list[int]] = {k: [] for k in COUPON_DIRT}
    rows: list[tuple[Any, ...]] = []
    prev_code: dict[str, str] = {}  # per set: a duplicate is only a duplicate within its coupon set
    for k in range(n):
        i = int(ids[k])
        set_id = sets[(i - 1) % len(sets)]
        code: str | None = f"C{i:06d}-{''.join(letters[k])}"
        kind = kinds[k]
        status = "used" if used[k] else "unused"
        if kind is not None:
            dirty[kind].append(i)
            status = "unused"
            if kind == "duplicate_code":
                code = prev_code.get(set_id, f"C{i:06d}-DUPLICATE")
            elif kind == "special_chars":
                code = f'{code},"Q"'
            elif kind == "null_code":
                code = None
        rows.append((i, set_id, code, status, created_s[k], used_s[k] if status == "used" else None))
        if code:
            prev_code[set_id] = code
    return rows, dirty


def erasure_rows(seed: int, n: int, now: datetime, n_customers: int) -> list[tuple[Any, ...]]:
    """Erasure requests: emails of existing customers typed in any case, one unknown email, some done."""
    rng = _rng(seed, 5, 0)
    rows: list[tuple[Any, ...]] = []
    for k in range(n):
        i = k + 1
        if k == n - 1:
            email = "nobody.at.all@example.com"
        else:
            cid = int(rng.integers(1, n_customers + 1))
            if cid % 2 == 0:  # even ids may be dirty: use the clean odd neighbour
                cid = max(1, cid - 1)
            email = clean_email(seed, cid)
            if k % 3 == 1:
                email = f" {email.upper()} "
        age = int(rng.integers(3600, 30 * 86400))
        requested = (now - timedelta(seconds=age)).strftime("%Y-%m-%d %H:%M:%S")
        done = (now - timedelta(seconds=age // 2)).strftime("%Y-%m-%d %H:%M:%S") if k % 4 == 3 else None
        rows.append((i, email, requested, done, "GDPR art. 17 request"))
    return rows


# --------------------------------------------------------------------------------------------------- writing


_ARROW_TYPES: dict[type, pa.DataType] = {
    sa.Integer: pa.int64(),
    sa.Boolean: pa.bool_(),
    sa.Numeric: pa.float64(),
}


def _arrow(table: sa.Table, data: Columns | Rows) -> pa.Table:
    """Columns (or row tuples in column order) as an Arrow table typed after the SQL table.

    Dates and timestamps stay ``YYYY-MM-DD[ HH:MM:SS]`` text: SQLite stores them so, PostgreSQL's COPY
    parses them, and SQLAlchemy reads them back as dates either way.
    """
    names = [c.name for c in table.columns]
    if isinstance(data, list):
        data = dict(zip(names, (list(c) for c in zip(*data, strict=True)), strict=True))
    fields = [pa.field(c.name, _ARROW_TYPES.get(type(c.type), pa.string())) for c in table.columns]
    return pa.table(
        [pa.array(data[name], type=f.type) for name, f in zip(names, fields, strict=True)], schema=pa.schema(fields)
    )


def _to_python(table: sa.Table, data: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts with Python dates, for the generic (SQLAlchemy ``insert``) path."""
    kinds = {c.name: type(c.type) for c in table.columns}
    out = data.to_pylist()
    for row in out:
        for name, v in row.items():
            if v is not None and kinds[name] is sa.DateTime:
                row[name] = datetime.strptime(v, "%Y-%m-%d %H:%M:%S")
            elif v is not None and kinds[name] is sa.Date:
                row[name] = datetime.strptime(v, "%Y-%m-%d").date()
    return out


class _Writer:
    """Inserts batches with the fastest path the database offers.

    SQLite file: ADBC bulk ingest of Arrow data (a C loop, no per-row Python). PostgreSQL (psycopg2):
    ``COPY ... FROM STDIN`` of a CSV rendered by pyarrow, an order of magnitude faster than INSERTs.
    Anything else: SQLAlchemy's batched ``insert()`` executemany.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._adbc: Any = None
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            import adbc_driver_sqlite.dbapi

            self._adbc = adbc_driver_sqlite.dbapi.connect(url.database, autocommit=True)
            with self._adbc.cursor() as cur:
                # A generated file can be regenerated: trade durability for a several-fold faster load.
                cur.execute("PRAGMA synchronous=OFF")
                cur.execute("PRAGMA journal_mode=MEMORY")

    def write(self, table: sa.Table, data: Columns | Rows) -> None:
        arrow = _arrow(table, data)
        if arrow.num_rows == 0:
            return
        if self._adbc is not None:
            with self._adbc.cursor() as cur:
                cur.execute("BEGIN")
                cur.adbc_ingest(table.name, arrow, mode="append")
                cur.execute("COMMIT")
            return
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
                buf = io.BytesIO()
                pa_csv.write_csv(arrow, buf, pa_csv.WriteOptions(include_header=False))
                buf.seek(0)
                raw = conn.connection.driver_connection
                assert raw is not None
                cols = ",".join(arrow.column_names)
                with raw.cursor() as cur:
                    cur.copy_expert(f"COPY {table.name} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
            elif conn.dialect.name in ("mysql", "mariadb") and conn.dialect.driver == "pymysql":
                _load_data_mysql(conn, table, arrow)
            else:
                conn.execute(table.insert(), _to_python(table, arrow))

    def close(self) -> None:
        if self._adbc is not None:
            self._adbc.close()
            self._adbc = None


_MYSQL_NULL = "\x01N"  # stands for NULL in the LOAD DATA file (no generated value holds a control character)


def _load_data_mysql(conn: sa.Connection, table: sa.Table, arrow: pa.Table) -> None:
    """MySQL/MariaDB (PyMySQL): ``LOAD DATA LOCAL INFILE`` of a CSV rendered by pyarrow, ten times faster than
    INSERTs. Every value goes as text (booleans as 0/1), NULL as a marker that ``NULLIF`` turns back."""
    import os
    import tempfile

    cols = []
    for name in arrow.column_names:
        col = arrow.column(name)
        if pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        cols.append(pc.fill_null(pc.cast(col, pa.string()), _MYSQL_NULL))
    text = pa.table(cols, names=arrow.column_names)
    fd, path = tempfile.mkstemp(suffix=".csv", prefix="connectif-erp-")
    os.close(fd)
    try:
        pa_csv.write_csv(text, path, pa_csv.WriteOptions(include_header=False))
        names = arrow.column_names
        variables = ", ".join(f"@v{i}" for i in range(len(names)))
        sets = ", ".join(f"`{n}` = NULLIF(@v{i}, '{_MYSQL_NULL}')" for i, n in enumerate(names))
        conn.exec_driver_sql(
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table.name}` CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
            f"({variables}) SET {sets}"
        )
    finally:
        os.unlink(path)


def _batches(total: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, BATCH):
        yield start, min(total, start + BATCH)


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
    if contacts < 1 or products < 1:
        raise ValueError("the sample ERP needs at least 1 contact and 1 product (orders reference them)")
    if not 0 <= dirty_rate <= 0.5:
        raise ValueError(f"dirty_rate must be between 0 and 0.5, got {dirty_rate}")
    anchor = (now or DEFAULT_NOW).astimezone(UTC).replace(tzinfo=None) if (now and now.tzinfo) else (now or DEFAULT_NOW)
    anchor = anchor.replace(microsecond=0)
    n_erasures = erasures if erasures is not None else max(3, contacts // 1000)
    sets = coupon_set_ids(seed, coupon_sets) if coupon_sets else []
    summary = GenerationSummary(url=_safe_url(url), seed=seed, now=anchor.isoformat(), coupon_sets=sets)
    u = sa.make_url(url)
    # PyMySQL loads the rows with LOAD DATA LOCAL INFILE (see _load_data_mysql), which the client must allow.
    mysql = u.get_backend_name() in ("mysql", "mariadb") and u.get_driver_name() == "pymysql"
    local_infile = {"local_infile": True} if mysql else {}
    engine = sa.create_engine(url, connect_args=local_infile)
    writer: _Writer | None = None
    try:
        create_schema(engine, indexes=False)
        engine.dispose()  # no sqlite3 connection stays open while ADBC's own SQLite library writes the file
        writer = _Writer(engine)
        writer.write(categories, [tuple(c) for c in CATEGORY_TREE])
        summary.rows["categories"] = len(CATEGORY_TREE)
        summary.dirty["customers"] = {k: [] for k in CUSTOMER_DIRT}
        for start, stop in _batches(contacts):
            cols, dirty = customer_rows(seed, start, stop, anchor, dirty_rate)
            writer.write(customers, cols)
            for k, v in dirty.items():
                summary.dirty["customers"][k].extend(v)
        summary.rows["customers"] = contacts
        summary.dirty["products"] = {k: [] for k in PRODUCT_DIRT}
        for start, stop in _batches(products):
            rows, dirty = product_rows(seed, start, stop, anchor, dirty_rate)
            writer.write(_PRODUCTS, rows)
            for k, v in dirty.items():
                summary.dirty["products"][k].extend(v)
        summary.rows["products"] = products
        line_id = 0
        for start, stop in _batches(orders):
            o, lines = order_rows(seed, start, stop, anchor, contacts, products, order_days, line_id)
            line_id += len(lines)
            writer.write(_ORDERS, o)
            writer.write(order_lines, lines)
        summary.rows["orders"] = orders
        summary.rows["order_lines"] = line_id
        summary.dirty["coupon_pool"] = {k: [] for k in COUPON_DIRT}
        if sets:
            for start, stop in _batches(coupons):
                rows, dirty = coupon_rows(seed, start, stop, anchor, sets, dirty_rate)
                writer.write(coupon_pool, rows)
                for k, v in dirty.items():
                    summary.dirty["coupon_pool"][k].extend(v)
        summary.rows["coupon_pool"] = coupons if sets else 0
        writer.write(erasure_requests, erasure_rows(seed, n_erasures, anchor, contacts))
        summary.rows["erasure_requests"] = n_erasures
        writer.close()
        create_indexes(engine)
    finally:
        if writer is not None:
            writer.close()
        engine.dispose()
    return summary


def _safe_url(url: str) -> str:
    """The URL without its password, for summaries and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
