"""Export date ranges: Connectif takes at most 31 days per activities or data-explorer export."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

from connectif_provider.models import MAX_EXPORT_RANGE_DAYS


def parse_iso(value: object) -> datetime:
    """The provider's one time parser: an ISO-8601 date-time as Connectif and Airflow write it (``Z`` or an
    offset; naive stays naive). The sync library has its own (``connectif_sync.timefmt``): the provider does
    not import the library, so that the triggerer stays light."""
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _split_days(from_date: str, to_date: str, max_days: int) -> list[tuple[str, str]]:
    start, end = date.fromisoformat(from_date), date.fromisoformat(to_date)
    if end < start:
        raise ValueError(f"from_date {from_date} is after to_date {to_date}")
    ranges: list[tuple[str, str]] = []
    while start <= end:
        stop = min(start + timedelta(days=max_days - 1), end)
        ranges.append((start.isoformat(), stop.isoformat()))
        start = stop + timedelta(days=1)
    return ranges


def _iso_formatter(sample: str) -> Callable[[datetime], str]:
    """Format like ``sample``: ``Z`` for UTC when the caller wrote ``Z``."""
    zulu = sample.endswith("Z")

    def _fmt(value: datetime) -> str:
        text = value.isoformat()
        return text.replace("+00:00", "Z") if zulu else text

    return _fmt


def split_date_range(from_date: str, to_date: str, max_days: int = MAX_EXPORT_RANGE_DAYS) -> list[tuple[str, str]]:
    """
    Split ``[from_date, to_date]`` into consecutive ranges Connectif accepts (at most ``max_days``).

    Dates (``YYYY-MM-DD``) split into inclusive day ranges of ``max_days`` days; date-times into ranges
    whose ends are at most ``max_days`` apart, the next range starting one second after the previous end.
    """
    if len(from_date) == 10 and len(to_date) == 10:
        return _split_days(from_date, to_date, max_days)
    start, end = parse_iso(from_date), parse_iso(to_date)
    if end < start:
        raise ValueError(f"from_date {from_date} is after to_date {to_date}")
    fmt = _iso_formatter(from_date)
    out: list[tuple[str, str]] = []
    while True:
        stop = min(start + timedelta(days=max_days), end)
        out.append((fmt(start), fmt(stop)))
        if stop >= end:
            return out
        start = stop + timedelta(seconds=1)
