"""Art. 12(3) GDPR: answer "without undue delay and in any event within one month of
receipt", extendable "by two further months where necessary, taking into account the
complexity and number of the requests", the subject being told of the extension and its
reasons within the first month."""

from __future__ import annotations

import calendar
from datetime import datetime

FIRST_PERIOD_MONTHS = 1
MAX_EXTENSION_MONTHS = 2


def add_months(when: datetime, months: int) -> datetime:
    """The same day `months` later, or the month's last day when it has no such day
    (31 January + 1 month = 28/29 February), as the EU computes periods (Reg. 1182/71)."""
    month0 = when.month - 1 + months
    year, month = when.year + month0 // 12, month0 % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def due(received_at: datetime) -> datetime:
    return add_months(received_at, FIRST_PERIOD_MONTHS)


def latest_extension(received_at: datetime) -> datetime:
    return add_months(received_at, FIRST_PERIOD_MONTHS + MAX_EXTENSION_MONTHS)
