"""Field validation as Connectif applies it, shared by CSV imports (string cells) and JSON bodies.

Each validator returns the stored value or raises ``FieldError`` with a message that names the bad value
and the expected form, because those messages end up in error reports that users read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from itertools import compress, repeat
from operator import not_
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email


class FieldError(ValueError):
    """A single field failed validation."""


SUBSCRIPTION_STATUSES = ("subscribed", "unsubscribed", "none")
CHANNEL_STATUSES = ("active", "bounced", "paused", "banned")
AVAILABILITY = ("instock", "outofstock")

# Fast path for the common email shapes: email-validator costs ~60 us per call, i.e. ~40 s for a 50 MB
# contacts file, so it only runs for what this conservative pattern does not accept (and then decides).
_EMAIL_FAST = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_INT = re.compile(r"^-?(?:0|[1-9][0-9]*)$")
_NUMBER = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 60 else text[:57] + '..."'


def check_email(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError("the email is missing; every contact needs an _email")
    value = value.strip()
    if len(value) <= 254 and _EMAIL_FAST.match(value) and len(value.split("@", 1)[0]) <= 64:
        return value
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise FieldError(f"{_show(value)} is not a valid email address: {exc}") from None
    return value


def check_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldError(f"{_show(value)} must be a string")
    return str(value)


def check_int(value: Any) -> int:
    if isinstance(value, bool):
        raise FieldError(f"{_show(value)} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value.strip())
    raise FieldError(f"{_show(value)} is not an integer (digits only, no decimals, no leading zero)")


def check_number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise FieldError(f"{_show(value)} is not a number")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise FieldError(f"{_show(value)} is not a finite number")
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value.strip())
        return int(number) if number.is_integer() and "." not in value else number
    raise FieldError(f"{_show(value)} is not a number (use digits and a dot for decimals, e.g. 12.50)")


def check_price(value: Any) -> float | int:
    number = check_number(value)
    if number < 0:
        raise FieldError(f"{_show(value)} must not be negative")
    return number


def check_date(value: Any) -> str:
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise FieldError(f"{_show(value)} is not a date in yyyy-mm-dd format")


def check_datetime(value: Any) -> str:
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.strip())
            return value.strip()
        except ValueError:
            pass
    raise FieldError(f"{_show(value)} is not an ISO 8601 date-time (e.g. 2024-05-01T10:00:00Z)")


def check_phone(value: Any) -> str:
    if isinstance(value, str) and _PHONE.match(value.strip()):
        return value.strip()
    raise FieldError(f"{_show(value)} is not a phone number in international format without spaces (e.g. +34600111222)")


def check_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise FieldError(f"{_show(value)} must be true or false")


def check_url(value: Any) -> str:
    if isinstance(value, str):
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.hostname:
            return value.strip()
    raise FieldError(f"{_show(value)} is not an absolute http(s) URL")


def check_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split("|") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item for item in value if item]
    raise FieldError(f"{_show(value)} must be a list of strings (in CSV: values separated by |)")


def check_categories(value: Any) -> list[str]:
    items = check_list(value)
    for item in items:
        if any(not part.strip() for part in item.split("/")):
            raise FieldError(f'category "{item}" must be a / path without empty parts, e.g. Shoes/Running')
    return items


def enum(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, str) and value.strip() in allowed:
            return value.strip()
        raise FieldError(f"{_show(value)} is not one of: {', '.join(allowed)}")

    return check


def url_in_domains(url: str, domains: list[str]) -> bool:
    """Whether the URL's host is one of the authorised domains or a subdomain of one."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return any(host == d.lower() or host.endswith("." + d.lower()) for d in domains)


Checker = Callable[[Any], Any]

CONTACT_FIELDS: dict[str, Checker] = {
    "_email": check_email,
    "_name": check_text,
    "_surname": check_text,
    "_externalId": check_text,
    "_birthdate": check_date,
    "_mobilePhone": check_phone,
    "_points": check_int,
    "_newsletterSubscriptionStatus": enum(*SUBSCRIPTION_STATUSES),
    "_smsSubscriptionStatus": enum(*SUBSCRIPTION_STATUSES),
    "_emailStatus": enum(*CHANNEL_STATUSES),
    "_mobilePhoneStatus": enum(*CHANNEL_STATUSES),
}
CONTACT_READ_ONLY = {
    "id",
    "_createdAt",
    "_updatedAt",
    "_totalPurchases",
    "_totalPurchasesAmount",
    "_averagePurchasesAmount",
    "_firstPurchaseDate",
    "_lastPurchaseDate",
}

PRODUCT_REQUIRED = ("productId", "name", "productDetailUrl", "unitPrice")
PRODUCT_FIELDS: dict[str, Checker] = {
    "productId": check_text,
    "name": check_text,
    "productDetailUrl": check_url,
    "unitPrice": check_price,
    "imageUrl": check_url,
    "thumbnailUrl": check_url,
    "description": check_text,
    "brand": check_text,
    "categories": check_categories,
    "tags": check_list,
    "unitPriceOriginal": check_price,
    "unitPriceWithoutVAT": check_price,
    "discountedAmount": check_price,
    "discountedPercentage": check_number,
    "availability": enum(*AVAILABILITY),
    "inStockUnits": check_int,
    "rating": check_number,
    "ratingCount": check_int,
    "reviewCount": check_int,
    "priority": check_int,
    "publishedAt": check_datetime,
    "isBlacklisted": check_bool,
    "relatedExternalProductIds": check_list,
    "customField1": check_text,
    "customField2": check_text,
    "customField3": check_text,
}


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def clean_contact(
    fields: dict[str, Any], max_chars: int, strict: bool = False, *, refuse_unknown: bool | None = None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Validate a contact row or patch body.

    CSV rows (``strict=False``) ignore columns of unknown system fields; JSON bodies (``strict=True``)
    reject read-only fields, and unknown system fields unless ``refuse_unknown`` is False (the API's
    patch follows the emulator's ``strict_unknown_fields`` setting). Empty values mean "no value" and
    are left out.
    """
    refuse_unknown = strict if refuse_unknown is None else refuse_unknown
    clean: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for name, value in fields.items():
        if name in CONTACT_READ_ONLY:
            if strict:
                errors.append((name, "is read-only"))
            continue
        if isinstance(value, str) and len(value) > max_chars:
            errors.append((name, f"value is {len(value)} characters long; the maximum is {max_chars}"))
            continue
        checker = CONTACT_FIELDS.get(name)
        if checker is None and name.startswith("_"):
            if refuse_unknown:
                errors.append((name, "is not a contact field"))
            continue
        if _empty(value):
            continue
        try:
            clean[name] = checker(value) if checker else _custom_value(value)
        except FieldError as exc:
            errors.append((name, str(exc)))
    return clean, errors


def _custom_value(value: Any) -> Any:
    """Custom fields: text, numbers, booleans, or a list (checkbox fields) kept as given."""
    if isinstance(value, list):
        if all(isinstance(item, str | int | float) and not isinstance(item, bool) for item in value):
            return value
        raise FieldError("a list field must hold strings or numbers")
    if isinstance(value, str | int | float | bool):
        return value
    raise FieldError(f"{_show(value)} must be a string, a number, a boolean or a list")


def clean_product(
    fields: dict[str, Any], max_chars: int, domains: list[str] | None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Validate a product row or body; unknown columns are ignored. ``domains`` None skips the URL check."""
    clean: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for name, value in fields.items():
        checker = PRODUCT_FIELDS.get(name)
        if checker is None:
            continue
        if isinstance(value, str) and len(value) > max_chars:
            errors.append((name, f"value is {len(value)} characters long; the maximum is {max_chars}"))
            continue
        if _empty(value):
            continue
        try:
            clean[name] = checker(value)
        except FieldError as exc:
            errors.append((name, str(exc)))
    url = clean.get("productDetailUrl")
    if url is not None and domains is not None and not url_in_domains(url, domains):
        errors.append(
            (
                "productDetailUrl",
                f'"{url}" is outside the account\'s authorised domains ({", ".join(domains) or "none"})',
            )
        )
    return clean, errors


# --- column-wise validation of CSV batches ------------------------------------------------------------------
# Imports validate a batch column by column: a pre-compiled "fast" pattern accepts the common well-formed
# values in C (``map(pattern.fullmatch, column)``), and only the rest goes through the full checker above,
# which either accepts it (e.g. " 5", 2024-02-29) or explains what is wrong. Row-by-row calls of the checkers
# cost ~10 us per cell, which made a 50 MB import take a minute; this keeps every rule and its message.
_FAST_ANY = re.compile(r"(?s)\s*\S.*")
_FAST_EMAIL = re.compile(
    r"(?=.{3,254}$)(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_FAST_DATE = re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])")
_FAST_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,15})")
_FAST_PRICE = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,15})?")
_FAST_SUBSCRIPTION = re.compile("|".join(SUBSCRIPTION_STATUSES))
_FAST_CHANNEL = re.compile("|".join(CHANNEL_STATUSES))
_FAST_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")


def _all_ints_fast(column: Sequence[str]) -> bool:
    """Whether every value matches ``_FAST_INT`` (1-16 ASCII digits, no leading zero), in C passes."""
    if not column or max(map(len, column)) > 16 or not all(map(str.isascii, column)):
        return False
    if not all(map(str.isdigit, column)):
        return False
    return sum(map(str.startswith, column, repeat("0"))) == column.count("0")


def _to_number(value: str) -> float | int:
    return float(value) if "." in value else int(value)


#: column -> (fast pattern, conversion of fast-accepted values or None for "as is")
_CONTACT_FAST: dict[str, tuple[re.Pattern[str], Callable[[str], Any] | None]] = {
    "_email": (_FAST_EMAIL, None),
    "_name": (_FAST_ANY, None),
    "_surname": (_FAST_ANY, None),
    "_externalId": (_FAST_ANY, None),
    "_birthdate": (_FAST_DATE, None),
    "_mobilePhone": (_FAST_PHONE, None),
    "_points": (_FAST_INT, int),
    "_newsletterSubscriptionStatus": (_FAST_SUBSCRIPTION, None),
    "_smsSubscriptionStatus": (_FAST_SUBSCRIPTION, None),
    "_emailStatus": (_FAST_CHANNEL, None),
    "_mobilePhoneStatus": (_FAST_CHANNEL, None),
}
_PRODUCT_FAST: dict[str, tuple[re.Pattern[str], Callable[[str], Any] | None]] = {
    "productId": (_FAST_ANY, None),
    "name": (_FAST_ANY, None),
    "description": (_FAST_ANY, None),
    "brand": (_FAST_ANY, None),
    "unitPrice": (_FAST_PRICE, _to_number),
    "unitPriceOriginal": (_FAST_PRICE, _to_number),
    "unitPriceWithoutVAT": (_FAST_PRICE, _to_number),
    "discountedAmount": (_FAST_PRICE, _to_number),
    "inStockUnits": (_FAST_INT, int),
}


def check_columns(
    kind: str, header: list[str], rows: list[list[str]], max_chars: int
) -> tuple[list[str], list[list[Any]], list[tuple[int, str, str]]]:
    """Validate CSV rows (all as wide as ``header``) of ``kind`` contacts or products.

    Returns the names of the kept columns, their clean values column by column (``None`` for an empty or
    failed cell) and the errors as (row index in ``rows``, field, message). Columns of unknown fields are
    ignored; for contacts, columns without a leading ``_`` are custom fields and kept as text. Columns, not
    one dict per row, because the import stores rows as tuples and builds each element's JSON once.
    """
    checkers = CONTACT_FIELDS if kind == "contacts" else PRODUCT_FIELDS
    fast_rules = _CONTACT_FAST if kind == "contacts" else _PRODUCT_FAST
    names: list[str] = []
    columns: list[list[Any]] = []
    errors: list[tuple[int, str, str]] = []
    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    for name, column in zip(header, transposed, strict=True):
        if kind == "contacts":
            if name in CONTACT_READ_ONLY or (name.startswith("_") and name not in checkers):
                continue
            checker: Checker = checkers.get(name, check_text)
        else:
            if name not in checkers:
                continue
            checker = checkers[name]
        pattern, convert = fast_rules.get(name, (_FAST_ANY, None) if name not in checkers else (None, None))
        values: list[Any]
        if pattern is _FAST_ANY:
            # "any non-blank text": str methods in C instead of a regex call per cell
            values = list(column)
            blank = not all(column) or any(map(str.isspace, column))
            slow = [i for i, v in enumerate(column) if not v.strip()] if blank else []
        elif pattern is _FAST_INT and _all_ints_fast(column):
            values = list(column) if convert is None else list(map(convert, column))
            slow = []
        elif pattern is not None:
            distinct = set(column)
            if len(distinct) * 2 <= len(column):
                # repeated values (statuses, dates, names...): each distinct value is matched once
                rejected = {v for v in distinct if pattern.fullmatch(v) is None}
                slow = [i for i, v in enumerate(column) if v in rejected] if rejected else []
                if convert is None:
                    values = list(column)
                else:
                    converted = {v: convert(v) for v in distinct - rejected}
                    values = list(map(converted.get, column, column))
            else:
                matched = list(map(pattern.fullmatch, column))
                slow = list(compress(range(len(matched)), map(not_, matched)))
                if convert is None:
                    values = list(column)
                elif not slow:
                    values = list(map(convert, column))
                else:
                    values = [convert(v) if m is not None else v for v, m in zip(column, matched, strict=True)]
        else:
            values = list(column)
            slow = list(range(len(values)))
        for index in slow:
            value = values[index]
            if not value.strip():
                values[index] = None
                continue
            try:
                values[index] = checker(value)
            except FieldError as exc:
                errors.append((index, name, str(exc)))
                values[index] = None
        too_long = (
            [i for i, v in enumerate(column) if len(v) > max_chars]
            if max(map(len, column), default=0) > max_chars
            else []
        )
        for index in too_long:
            errors.append((index, name, f"value is {len(column[index])} characters long; the maximum is {max_chars}"))
            values[index] = None
        names.append(name)
        columns.append(values)
    return names, columns, errors
