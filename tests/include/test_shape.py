"""Shape: each type turns source values into exactly the text Connectif accepts, and flags the rest."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from connectif_sync.mappings import FieldSpec
from connectif_sync.shape import shape_field


def run(
    data: list[Any], type_: str, arrow_type: pa.DataType | None = None, **opts: Any
) -> tuple[list[Any], dict[int, str]]:
    """Shape ``data`` as one field; return the output and {row: reason} of the rows flagged."""
    extra = opts.pop("extra", {})
    spec = FieldSpec(name="f", column="c", type=type_, **opts)
    table = pa.table({"c": pa.array(data, type=arrow_type), **{k: pa.array(v) for k, v in extra.items()}})
    out, problems = shape_field(spec, table)
    flagged = {int(i): p.reason for p in problems for i in p.mask.nonzero()[0]}
    return out.to_pylist(), flagged


def test_email_trimmed_lower_cased_and_checked() -> None:
    out, bad = run([" Ana.Garcia@Example.COM ", "john.doe@", None, "", "two words@example.com", "ÑANDÚ@Example.es",
                    "x@@example.com", "Zoë@exämple.com"], "email")  # fmt: skip
    assert out == ["ana.garcia@example.com", "john.doe@", None, None, "two words@example.com", "ñandú@example.es",
                   "x@@example.com", "zoë@exämple.com"]  # fmt: skip
    assert bad == {1: "invalid email address", 4: "invalid email address", 6: "invalid email address"}


def test_trimming_is_exactly_unicode_trimming() -> None:
    """The fast trim (the ASCII kernel, the Unicode one only for values that are not ASCII) removes exactly
    what ``utf8_trim_whitespace`` removes: every ASCII character at either end, Unicode spaces, nulls."""
    import pyarrow.compute as pc

    from connectif_sync.shape import _trim

    ends = [chr(c) for c in range(128)] + ["\u00a0", "\u2003", "\u3000", "\u0085", "\u200b", "é"]
    values = [f"{a}{b}x y{b}{a}" for a in ends for b in (" ", "", "\x1f")] + [None, "", "  ", "\u00a0"]
    for data in (pa.array(values), pa.chunked_array([values[:100], values[100:]]), pa.array(values[:128])):
        expected = pc.utf8_trim_whitespace(data).to_pylist()
        assert _trim(data).to_pylist() == expected
    out, _ = run(["\x1cAna@Example.com\u3000", "\u00a0zoë@EXAMPLE.com\t", "\x1fbob@example.com "], "email")
    assert out == ["ana@example.com", "zoë@example.com", "bob@example.com"]


def test_the_accelerators_email_pass_is_the_kernels_and_the_pattern() -> None:
    """``email_rows`` (one C pass over ASCII addresses) gives exactly the values and the verdicts of Arrow's
    kernels and ``EMAIL_PATTERN`` (RE2), on addresses built near every edge of the pattern (labels of 0-64
    characters, hyphens and digits where they may or may not be, top-level domains of 1-64 letters, spaces
    and separators at both ends, upper case, text that is not ASCII) and on random text."""
    import random

    from connectif_sync.hashing import email_rows
    from connectif_sync.shape import _email_ascii, _email_unicode

    assert email_rows is not None, "the C accelerator is not built: run make install"
    rnd = random.Random(7)
    labels = ["a", "A9", "x-y", "-x", "x-", "9", "-", "", "a" * 62, "b" * 63, "c" * 64, "d" * 61 + "-e", "é", "ab_c"]
    tlds = ["com", "C", "co", "io9", "", "x" * 63, "y" * 64, "Com", "c-m", "ü"]
    locals_ = ["a", "A.b", ".", "a..b", "!#$%&'*+/=?^_`{|}~-", "", "a b", "a@b", 'a"b', "ñ", "x(y)"]
    ends = ["", " ", "\t", "\n", "\x1c", "\x1f", "\x00", "\u00a0", "\u3000", "\x7f", "\r\n "]
    values: list[str | None] = [None, "", "   "]
    for i in range(30_000):
        if i % 2:  # near misses: one part at a time may break the pattern
            domain = ".".join(rnd.choice(labels) for _ in range(rnd.randint(0, 3)))
            at, dot = rnd.choice(["@", "@@", ""]), rnd.choice([".", "", ".."])
            tld, local = rnd.choice(tlds), rnd.choice(locals_)
        else:  # valid parts, the longest allowed included
            domain = ".".join(rnd.choice(labels[:6] + labels[8:10] + labels[11:12]) for _ in range(rnd.randint(1, 3)))
            at, dot, tld, local = "@", ".", rnd.choice(["com", "C", "co", "x" * 63, "Com"]), rnd.choice(locals_[:5])
        values.append(rnd.choice(ends) + f"{local}{at}{domain}{dot}{tld}" + rnd.choice(ends))
    alphabet = "aZ09.-@_ +é\t\x1f\u212a"  # ... and the Kelvin sign, which lower-cases to ASCII "k"
    values += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for _ in range(30_000)]
    values += [None if i % 5 == 0 else v for i, v in enumerate(values[:2000])]
    data = pa.array(values, pa.string())
    for text in (data, data.slice(1001, 20_000)):
        fast, fast_bad = _email_ascii(text)
        slow, slow_bad = _email_unicode(text)
        assert fast.to_pylist() == slow.to_pylist()
        assert fast_bad.tolist() == slow_bad.tolist()
    valid = int(pa.compute.sum(pa.compute.is_valid(slow)).as_py()) - int(slow_bad.sum())
    assert valid > 2_000 and slow_bad.sum() > 2_000  # both verdicts well exercised (in the slice)


def test_phone_international_format() -> None:
    values = ["612 345 678", "+34 612-345-678", "0034612345678", "06 12 34 56 78", "074 191 0378", "06 1234 5678",
              "(415) 555-0134", "12ab", None, ""]  # fmt: skip
    countries = ["ES", "ES", "ES", "FR", "GB", "IT", "US", "ES", "ES", "ES"]
    out, bad = run(values, "phone", country_column="country", extra={"country": countries})
    assert out[:7] == ["+34612345678", "+34612345678", "+34612345678", "+33612345678", "+44741910378",
                       "+390612345678", "+14155550134"]  # fmt: skip
    assert out[8:] == [None, None]
    assert list(bad) == [7] and bad[7].startswith("invalid phone number")


def test_phone_default_country() -> None:
    out, bad = run(["600 111 222", "+49 1512 3456789"], "phone", default_country="ES")
    assert out == ["+34600111222", "+4915123456789"] and not bad


def test_dates_from_text_timestamps_and_dates() -> None:
    assert run(["1990-02-03", "1990-02-03 10:11:12", "2001-12-31T00:00:00", None], "date")[0] == [
        "1990-02-03", "1990-02-03", "2001-12-31", None]  # fmt: skip
    assert run([datetime(2020, 1, 2, 3, 4, 5), None], "date", pa.timestamp("us"))[0] == ["2020-01-02", None]
    assert run([date(1999, 9, 9)], "date", pa.date32())[0] == ["1999-09-09"]
    out, bad = run(["31/02/1990", "1990-02-30", "1990-02-03"], "date")
    assert out[2] == "1990-02-03" and set(bad) == {0, 1}
    assert bad[0] == "not a date (expected yyyy-mm-dd)"


def test_datetimes_iso_utc() -> None:
    out, bad = run(["2024-05-01 10:00:00", "2024-05-01T10:00:00.123456", "nope"], "datetime")
    assert out[:2] == ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"] and list(bad) == [2]
    assert run([datetime(2024, 5, 1, 10, 0, 1)], "datetime", pa.timestamp("us"))[0] == ["2024-05-01T10:00:01Z"]


def test_integers_lose_leading_zeros_and_check_ranges() -> None:
    assert run(["007", " 42 ", "0", "000123", None, ""], "integer")[0] == ["7", "42", "0", "123", None, None]
    assert run([7, None], "integer", pa.int64())[0] == ["7", None]
    out, bad = run(["12", "1.5", "abc", "-3"], "integer", min=0)
    assert out[0] == "12" and out[1] is None and out[2] is None
    assert bad == {1: "not an integer", 2: "not an integer", 3: "below the minimum 0"}


def test_decimals_plain_numbers() -> None:
    out, bad = run([Decimal("12.50"), Decimal("10.00"), Decimal("-3.1"), None], "decimal", pa.decimal128(10, 2), min=0)
    assert out == ["12.5", "10", "-3.1", None] and bad == {2: "below the minimum 0"}
    out, bad = run(["317.75", "0012.10", "x", "1e3"], "decimal")
    assert out == ["317.75", "12.1", None, "1000"] and bad == {2: "not a number"}
    assert run([0.1 + 0.2, 2.0], "decimal", pa.float64(), max=1)[0] == ["0.3", "2"]


def test_booleans() -> None:
    out, bad = run(["Yes", "n", "TRUE", "0", "maybe", None], "boolean")
    assert out == ["true", "false", "true", "false", None, None] and bad == {
        4: "not a boolean (expected true or false)"
    }
    assert run([True, False, None], "boolean", pa.bool_())[0] == ["true", "false", None]


def test_lists_pipe_joined() -> None:
    out, _ = run(["a, b ,c", "x||y", ",only,", "", None, "one|two,three"], "list", separator=",")
    assert out == ["a|b|c", "x||y".replace("||", "//"), "only", None, None, "one/two|three"]


def test_category_paths() -> None:
    out, _ = run(["Shoes / Running", "Home & Garden/Kitchen", "A|B/C", None], "category_path")
    assert out == ["Shoes/Running", "Home & Garden/Kitchen", "A-B/C", None]
    out, _ = run(["Shoes/Running; Kids / Shoes"], "category_path", separator=";")
    assert out == ["Shoes/Running|Kids/Shoes"]


def test_urls() -> None:
    out, bad = run([" https://shop.example.com/p/1 ", "ftp://x.example.com", "shop.example.com/p", None], "url")
    assert out[0] == "https://shop.example.com/p/1" and set(bad) == {1, 2}
    assert bad[1] == "not an absolute http(s) URL"


def test_enums_with_map_and_values() -> None:
    opts = {"map": {"true": "subscribed", "false": "unsubscribed"}, "values": ("subscribed", "unsubscribed", "none")}
    assert run([1, 0, None], "enum", pa.int64(), **opts)[0] == ["subscribed", "unsubscribed", None]
    assert run([True, False], "enum", pa.bool_(), **opts)[0] == ["subscribed", "unsubscribed"]
    out, bad = run(["yes", "none", "maybe"], "enum", **opts)
    assert out == ["subscribed", "none", "maybe"] and bad == {2: "not one of subscribed, unsubscribed, none"}
    out, bad = run(["G", "S", "X"], "enum", map={"G": "gold", "S": "silver"})
    assert out == ["gold", "silver", None] and bad == {2: "value not in map (G, S)"}
    assert run([1, None, 2, 0], "enum", pa.int64(), **opts) == (["subscribed", None, "subscribed", "unsubscribed"], {})
    # a flag mapped to a value that is not allowed is still flagged, row by row
    odd = {"map": {"true": "yes-please", "false": "unsubscribed"}, "values": opts["values"]}
    out, bad = run([True, False, None], "enum", pa.bool_(), **odd)
    assert out == ["yes-please", "unsubscribed", None] and bad == {0: "not one of subscribed, unsubscribed, none"}
    out, bad = run(["gold", None, "tin"], "enum", values=("gold", "silver"))  # values and no map
    assert out == ["gold", None, "tin"] and bad == {2: "not one of gold, silver"}
    assert run([True, False], "enum", pa.bool_(), values=("true", "false"))[0] == ["true", "false"]
    flag = {"map": {"true": "subscribed", "false": "unsubscribed"}}  # a flag column, no `values`: no text made
    assert run([1, 0, None, 2], "enum", pa.int64(), **flag) == (["subscribed", "unsubscribed", None, "subscribed"], {})
    assert run([False, None], "enum", pa.bool_(), **flag) == (["unsubscribed", None], {})
    out, bad = run(["1", "no", "perhaps"], "enum", **flag)  # text flags still go through the words
    assert out == ["subscribed", "unsubscribed", None] and bad == {2: "value not in map (true, false)"}


def test_strings_keep_everything_but_check_length() -> None:
    values = ['O"Brien, Jr.\nSmith;|', "Zoë 李 🎉", "000123", "", "x" * 256]
    out, bad = run(values, "string", max_length=255)
    assert out == [values[0], values[1], "000123", None, "x" * 256] and bad == {4: "longer than 255 characters"}


@pytest.mark.parametrize("type_", ["string", "url"])
def test_length_is_counted_in_characters_not_bytes(type_: str) -> None:
    """Byte lengths settle a chunk only when no value has more bytes than the limit; otherwise characters
    are counted: five 4-byte characters fit a limit of 5, six do not; a chunk of short values flags none."""
    base = "https://e.com/" if type_ == "url" else ""
    fits, over = base + "🎉" * 5, base + "🎉" * 6
    limit = len(base) + 5
    assert run([fits, over, None, base + "abc"], type_, max_length=limit)[1] == {1: f"longer than {limit} characters"}
    assert run([fits, None], type_, max_length=limit)[1] == {}
    assert run([base + "ab", None], type_, max_length=limit)[1] == {}
    assert run([None, None], type_, pa.string(), max_length=limit)[1] == {}


@pytest.mark.parametrize("type_", ["string", "email", "date", "integer", "decimal", "list", "url"])
def test_all_null_columns(type_: str) -> None:
    out, bad = run([None, None], type_, pa.null())
    assert out == [None, None] and not bad
