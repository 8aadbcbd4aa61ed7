"""In-process unit tests of the emulator's validation rules, rate limiter and export date formats."""

from __future__ import annotations

import pytest

from emulator.exports import format_datetime, normalise_bound
from emulator.imports import _domain_check
from emulator.ratelimit import RateLimiter
from emulator.store import new_id, new_ids
from emulator.validation import (
    FieldError,
    check_columns,
    check_email,
    check_int,
    check_number,
    clean_contact,
    clean_product,
    url_in_domains,
)


@pytest.mark.parametrize(
    "email", ["a@example.com", "first.last+tag@sub.example.co.uk", "o'hara@example.ie", "ü@exämple.de"]
)
def test_valid_emails(email: str) -> None:
    assert check_email(email) == email


@pytest.mark.parametrize(
    "email", ["", "plain", "a@", "@example.com", "a..b@example.com", "a@example", "a b@example.com"]
)
def test_invalid_emails(email: str) -> None:
    with pytest.raises(FieldError):
        check_email(email)


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("12", 12), ("-4", -4), (7, 7)])
def test_integers(raw: object, value: int) -> None:
    assert check_int(raw) == value


@pytest.mark.parametrize("raw", ["01", "1.0", "1e3", "", " ", True, "١٢"])
def test_not_integers(raw: object) -> None:
    with pytest.raises(FieldError):
        check_int(raw)


@pytest.mark.parametrize("raw", ["12,50", "inf", "nan", "1e5", "$3", float("inf")])
def test_not_numbers(raw: object) -> None:
    with pytest.raises(FieldError):
        check_number(raw)


def test_domains_include_subdomains_only() -> None:
    assert url_in_domains("https://shop.example.com/p", ["example.com"])
    assert url_in_domains("https://EXAMPLE.com./p", ["example.com"])
    assert not url_in_domains("https://badexample.com/p", ["example.com"])
    assert not url_in_domains("https://example.com.evil.test/p", ["example.com"])


def test_clean_contact_collects_every_error() -> None:
    clean, errors = clean_contact({"_email": "a@example.com", "_points": "x", "_birthdate": "2024-02-30"}, 100)
    assert clean == {"_email": "a@example.com"}
    assert [field for field, _ in errors] == ["_points", "_birthdate"]


def test_clean_product_checks_domains_when_asked() -> None:
    row = {"productId": "P", "name": "N", "productDetailUrl": "https://x.test/", "unitPrice": "1"}
    assert clean_product(row, 100, None)[1] == []
    assert [f for f, _ in clean_product(row, 100, ["example.com"])[1]] == ["productDetailUrl"]


def test_rate_limiter_windows() -> None:
    limiter = RateLimiter()
    decisions = [limiter.hit("acc", 2, 60) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert [d.remaining for d in decisions] == [1, 0, 0]
    assert decisions[2].headers(retry_after=True)["Retry-After"] == "60"
    assert "Retry-After" not in decisions[2].headers(retry_after=False)
    assert limiter.hit("other", 2, 60).allowed
    assert (limiter.max_seen_in_window, limiter.max_allowed_in_window) == (3, 2)
    assert not limiter.hit("fresh", 5, 60, force_reject=True).allowed


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("ISO", "2026-03-10T15:04:00.000Z"),
        ("L", "03/10/2026"),
        ("LL", "March 10, 2026"),
        ("LLL", "March 10, 2026 3:04 PM"),
    ],
)
def test_export_date_formats(fmt: str, text: str) -> None:
    assert format_datetime("2026-03-10T15:04:00.000Z", fmt) == text


def test_export_bounds() -> None:
    assert normalise_bound("2026-03-10", True) == "2026-03-11T00:00:00.000Z"
    assert normalise_bound("2026-03-10T02:00:00+02:00", False) == "2026-03-10T00:00:00.000Z"


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "http://EXAMPLE.com/p?q=1#f",
        "https://shop.example.com:8443/a",
        "https://example.com./x",
        "https://example.com.evil.org/",
        "https://evilexample.com/",
        "https://example.com@evil.org/",
        "https://evil.org/@example.com",
        "https://user@example.com/",
        "https://[::1]/",
        "https://exa\tmple.com/",
        "https://example.org/",
    ],
)
@pytest.mark.parametrize("domains", [["example.com"], ["Example.COM", "other.net"], ["example.com."], []])
def test_domain_fast_path_agrees_with_url_in_domains(url: str, domains: list[str]) -> None:
    assert _domain_check(domains)(url) == url_in_domains(url, domains)


@pytest.mark.parametrize(
    "cells",
    [
        ["1", "20", "0", "4999"],
        ["1", "007", "0", "3"],
        ["-4", "12", "", " 5"],
        ["1" * 17, "2"],
        ["١٢", "3"],
    ],
)
def test_integer_columns_match_the_value_by_value_rule(cells: list[str]) -> None:
    names, columns, errors = check_columns("contacts", ["_points"], [[c] for c in cells], 100)
    expected_values: list[object] = []
    expected_errors: list[tuple[int, str]] = []
    for index, cell in enumerate(cells):
        clean, problems = clean_contact({"_points": cell}, 100)
        expected_values.append(clean.get("_points"))
        expected_errors += [(index, field) for field, _message in problems]
    assert names == ["_points"]
    assert columns == [expected_values]
    assert [(index, field) for index, field, _message in errors] == expected_errors


def test_new_ids_are_unique_and_shaped_like_object_ids() -> None:
    ids = [*new_ids(10_000), new_id(), *new_ids(1)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
