"""Monthly invoice drafts, built from the usage table and the price book.

A tenant's invoice for a month (UTC) has one line per (model, unit) used:
{"model", "unit", "quantity", "unit_price", "amount"}, each number a Decimal as a
string, amounts quantized to 6 places; a unit without a price is listed with
"unit_price": null, "amount": "0" and "unpriced": true, so nobody misses it. The
total is the sum of the amounts. Building again replaces the draft (idempotent); a
FINAL invoice is never changed.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Sum

from billing.errors import BillingCode, InvoiceError
from billing.models import UNITS, Invoice, UsageEvent
from billing.selectors import DEFAULT_CURRENCY, PLACES, PriceBook, amount, as_decimal, plain
from tenants.models import Tenant

log = logging.getLogger(__name__)


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """[start, end) of the month in UTC."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1..12, not {month}")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if month == 12
        else datetime(year, month + 1, 1, tzinfo=UTC)
    )
    return start, end


def invoice_lines(
    *, tenant: Tenant, year: int, month: int, book: PriceBook | None = None
) -> tuple[list[dict[str, Any]], Decimal, str]:
    """The month's lines, their total and the currency, without writing anything."""
    start, end = month_bounds(year, month)
    book = book or PriceBook.for_plan(tenant.plan_id)
    sums = (
        UsageEvent.objects.filter(tenant_id=tenant.pk, created_at__gte=start, created_at__lt=end)
        .exclude(outcome=UsageEvent.Outcome.PROVISIONAL)  # not final yet: see UsageEvent
        .values("model")
        .annotate(**{unit: Sum(unit) for unit in UNITS})
        .order_by()
    )
    lines: list[dict[str, Any]] = []
    total = Decimal(0)
    currencies: set[str] = set()
    rows: list[dict[str, Any]] = sorted((dict(r) for r in sums), key=lambda r: r["model"])
    for row in rows:
        for unit in UNITS:
            quantity = as_decimal(row[unit] or 0)
            if quantity <= 0:
                continue
            rate = book.rate(row["model"], unit, tenant.plan_id)
            line: dict[str, Any] = {
                "model": row["model"],
                "unit": unit,
                "quantity": plain(quantity),
            }
            if rate is None:
                line.update(unit_price=None, amount="0", unpriced=True)
            else:
                value = amount(quantity, rate.unit_price)
                total += value
                currencies.add(rate.currency)
                line.update(unit_price=plain(rate.unit_price), amount=str(value))
            lines.append(line)
    if len(currencies) > 1:
        raise InvoiceError(
            BillingCode.MIXED_CURRENCIES,
            f"tenant {tenant.pk}: {year}-{month:02d} is priced in several currencies "
            f"({', '.join(sorted(currencies))}); fix the price book",
        )
    currency = next(iter(currencies)) if currencies else DEFAULT_CURRENCY
    return lines, total.quantize(PLACES), currency


def invoice_build(
    *, tenant: Tenant, year: int, month: int, book: PriceBook | None = None
) -> Invoice:
    """Create or refresh the tenant's draft invoice for the month (UTC). A FINAL
    invoice for that month is returned unchanged. `book` lets a bulk run load the
    price book once."""
    period_start = date(year, month, 1)
    lines, total, currency = invoice_lines(tenant=tenant, year=year, month=month, book=book)
    _, end = month_bounds(year, month)
    period_end = (end - timedelta(days=1)).date()  # the last day, inclusive
    with transaction.atomic():
        current = (
            Invoice.objects.select_for_update()
            .filter(tenant_id=tenant.pk, period_start=period_start)
            .first()
        )
        if current is not None and current.status == Invoice.Status.FINAL:
            return current
        invoice, _ = Invoice.objects.update_or_create(
            tenant_id=tenant.pk,
            period_start=period_start,
            defaults={
                "period_end": period_end,
                "status": Invoice.Status.DRAFT,
                "currency": currency,
                "lines": lines,
                "total": total,
                "customer_name": tenant.name,
                "customer_email": tenant.billing_email,
                "jurisdiction": settings.RBEE_BOOKS_JURISDICTION[:2],
            },
        )
    return invoice


def invoices_build_all(year: int, month: int) -> int:
    """Build the month's draft for every tenant with usage in it (and refresh drafts
    that already exist for it); the number of invoices built. A tenant whose invoice
    cannot be built is logged and skipped, so it does not hold up the others."""
    start, end = month_bounds(year, month)
    # Usage is read per tenant even here (a correlated subquery on the tenant's index).
    used = UsageEvent.objects.filter(
        tenant_id=OuterRef("pk"), created_at__gte=start, created_at__lt=end
    )
    drafted = Invoice.objects.filter(
        tenant_id=OuterRef("pk"), period_start=date(year, month, 1), status=Invoice.Status.DRAFT
    )
    tenants = Tenant.objects.filter(Q(Exists(used)) | Q(Exists(drafted))).order_by("pk")
    book = PriceBook.load()
    built = 0
    for tenant in tenants:
        try:
            invoice_build(tenant=tenant, year=year, month=month, book=book)
        except InvoiceError:
            log.exception("invoice for tenant %s, %d-%02d not built", tenant.pk, year, month)
            continue
        built += 1
    return built
