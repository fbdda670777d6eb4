"""The monthly invoice job (Celery).

build_monthly_invoices runs daily (beat, 02:00 UTC): it refreshes the previous month's
drafts (late usage, price fixes) and the current month's, so the portal always shows a
fresh draft. It is idempotent: drafts are replaced, FINAL invoices never touched.

This module is not named tasks.py, so Celery's autodiscovery does not find it by
itself: a worker needs it in CELERY_IMPORTS ("billing.invoice_tasks") in the settings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from celery import shared_task

from billing.invoices import invoices_build_all


def previous_month(today: date) -> tuple[int, int]:
    return (today.year - 1, 12) if today.month == 1 else (today.year, today.month - 1)


@shared_task(name="billing.build_monthly_invoices", acks_late=True, ignore_result=True)
def build_monthly_invoices(
    year: int | None = None, month: int | None = None, today: str | None = None
) -> dict[str, int]:
    """Build invoice drafts; {"YYYY-MM": invoices built}.

    With year and month: that month only. Without: the previous month and the current
    one, in UTC (`today`, an ISO date, stands in for the current UTC date)."""
    months: list[tuple[int, int]]
    if year is not None and month is not None:
        months = [(int(year), int(month))]
    elif year is None and month is None:
        now = date.fromisoformat(today) if today else datetime.now(UTC).date()
        months = [previous_month(now), (now.year, now.month)]
    else:
        raise ValueError("give both year and month, or neither")
    out: dict[str, Any] = {}
    for y, m in months:
        out[f"{y:04d}-{m:02d}"] = invoices_build_all(y, m)
    return out
