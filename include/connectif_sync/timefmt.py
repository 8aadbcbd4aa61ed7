"""The library's one time parser: every timestamp it reads as text (CLI arguments, purchase windows, the state
store's watermarks, ERP values SQLite hands back as text) goes through :func:`parse_when`.

Why one: the library works in naive UTC throughout (the CSVs, the watermarks and the state store all hold UTC
wall times without a zone), and four hand-written parsers disagreed on ``Z`` suffixes and offsets: one dropped
an offset instead of converting it. The provider and the emulator keep their own small parsers, because they
must not import this library (the provider knows nothing of it; the emulator stands for Connectif).
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_when(value: str | datetime | None) -> datetime | None:
    """``YYYY-MM-DD[ HH:MM[:SS[.f]]]`` or ISO 8601 text (``T`` or space, ``Z`` or an offset), or a datetime,
    as a naive UTC datetime; None stays None.

    Text or datetimes without a zone are taken as UTC already; those with one are converted to UTC. Raises
    ValueError naming the value when it is not a timestamp.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a timestamp: write YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or ISO 8601 (UTC unless "
                "it carries an offset)"
            ) from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def parse_ts(value: str | datetime) -> datetime:
    """:func:`parse_when` for a value that is always there (a stored watermark, an ERP column)."""
    parsed = parse_when(value)
    assert parsed is not None  # only None parses to None
    return parsed
