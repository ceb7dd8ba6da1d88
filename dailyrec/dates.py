"""Dates and partitions. Time always comes from the run (``cur_date``), never from ``now()``."""

from __future__ import annotations

import datetime as dt
import re

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(value: str | dt.date) -> dt.date:
    """``"2026-11-01"`` -> ``date(2026, 11, 1)``; a clear error for anything else."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ValueError(f"cur_date must be YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"cur_date {value!r} is not a calendar date: {exc}") from None


def fmt(d: dt.date) -> str:
    return d.isoformat()


def date_range(start: str | dt.date, days: int) -> list[str]:
    s = parse_date(start)
    return [fmt(s + dt.timedelta(days=i)) for i in range(days)]


def window(cur_date: str | dt.date, days: int) -> list[str]:
    """The ``days`` dates ending at ``cur_date`` (inclusive), oldest first."""
    c = parse_date(cur_date)
    return [fmt(c - dt.timedelta(days=days - 1 - i)) for i in range(days)]


def previous(cur_date: str | dt.date, days: int = 1) -> str:
    return fmt(parse_date(cur_date) - dt.timedelta(days=days))


def check_hour(hour: int) -> int:
    if not isinstance(hour, int) or not 0 <= hour <= 23:
        raise ValueError(f"hour must be an integer 0-23, got {hour!r}")
    return hour
