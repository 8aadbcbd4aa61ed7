"""The rows of the sample ERP: pure functions of ``(seed, ids, now)``, clean and dirty.

Every draw depends on the seed, the table and the batch of :data:`BATCH` rows (or, for names, on the row id
alone), never on the database or on how the caller writes the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from phonenumbers import country_code_for_region

BATCH = 20_000
"""Rows generated and inserted at a time. Fixed (not a setting) so that data does not depend on it."""

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
