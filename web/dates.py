"""Dates typed into the faces' filters, bounded: a year from MIN_YEAR to MAX_YEAR, so that
the arithmetic after parsing (the next day, the next month) never leaves Python's date
range (year 9999 + a day is an OverflowError, a 500). ValueError with a sentence that
names the field for anything else; the pages answer it with their 400 page."""

from __future__ import annotations

import re
from datetime import date

MIN_YEAR = 2000
MAX_YEAR = 9998
_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")


def _bounded(value: date, name: str) -> date:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"{name}: the year must be from {MIN_YEAR} to {MAX_YEAR}")
    return value


def parse_day(text: str, name: str) -> date:
    """A YYYY-MM-DD day."""
    try:
        value = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{name}: not a date {text[:20]!r} (use YYYY-MM-DD)") from None
    return _bounded(value, name)


def parse_month(text: str, name: str) -> date:
    """The first day of a YYYY-MM month."""
    match = _MONTH.match(text.strip())
    try:
        if match is None:
            raise ValueError
        value = date(int(match.group(1)), int(match.group(2)), 1)
    except ValueError:
        raise ValueError(f"{name}: not a month {text[:20]!r} (use YYYY-MM)") from None
    return _bounded(value, name)
