"""The library's one time parser: naive UTC out, whatever the spelling in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from connectif_sync.timefmt import parse_ts, parse_when


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01", datetime(2025, 3, 1)),
        ("2025-03-01 10:30", datetime(2025, 3, 1, 10, 30)),
        (" 2025-03-01T10:30:15 ", datetime(2025, 3, 1, 10, 30, 15)),
        ("2025-03-01 10:30:15.250000", datetime(2025, 3, 1, 10, 30, 15, 250000)),
        ("2025-03-01T10:30:15Z", datetime(2025, 3, 1, 10, 30, 15)),
        ("2025-03-01T10:30:15+02:00", datetime(2025, 3, 1, 8, 30, 15)),  # converted, not dropped
        ("2025-03-01T00:30:00-01:00", datetime(2025, 3, 1, 1, 30)),
    ],
)
def test_text_becomes_naive_utc(text: str, expected: datetime) -> None:
    assert parse_when(text) == expected and parse_ts(text) == expected


def test_datetimes_and_none() -> None:
    assert parse_when(None) is None
    assert parse_when(datetime(2025, 1, 1, 12)) == datetime(2025, 1, 1, 12)
    aware = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_when(aware) == datetime(2025, 1, 1, 17) and parse_ts(aware).tzinfo is None
    assert parse_when(datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2025, 1, 1)


def test_a_value_that_is_not_a_time_names_itself_and_the_formats() -> None:
    with pytest.raises(ValueError, match=r"'last tuesday' is not a timestamp: write YYYY-MM-DD"):
        parse_when("last tuesday")
