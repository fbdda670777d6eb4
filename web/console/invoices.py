"""/console/invoices: invoices of every tenant (filter by tenant, status and month),
one invoice with its lines and its tenant's Stripe sync state (customer, meter events
sent and waiting, the last error). Read: areas `tenants` or `audit`; rebuilding a draft
from the recorded usage (billing.invoices.invoice_build): `tenants` only."""

from __future__ import annotations

from datetime import date

from django.db.models import Count, Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from billing.invoices import invoice_build
from billing.models import Invoice, MeterEvent
from billing.stripe_sync import stripe_enabled
from tenants.models import Tenant
from web.auth import operator_page
from web.console.common import action, any_area, can, invalid, page, paged, query_without_page
from web.dates import parse_month

SECTION = "invoices"


def _month(text: str) -> date | None:
    """The first day of a YYYY-MM month (years bounded, web/dates.py); ValueError else."""
    return parse_month(text, "month") if text else None


@any_area("tenants", "audit")
@require_GET
def invoice_list(request: HttpRequest) -> HttpResponse:
    """GET /console/invoices?tenant=&status=&month=YYYY-MM."""
    tenant = request.GET.get("tenant", "").strip()[:64]
    status = request.GET.get("status", "")
    try:
        month = _month(request.GET.get("month", "").strip())
    except ValueError as exc:
        return invalid(request, str(exc), section=SECTION, back="/console/invoices")
    rows = Invoice.objects.select_related("tenant").order_by("-period_start", "tenant__name")
    if tenant:
        rows = rows.filter(tenant__name=tenant)
    if status in Invoice.Status.values:
        rows = rows.filter(status=status)
    if month is not None:
        rows = rows.filter(period_start=month)
    current = paged(request, rows)
    return page(
        request,
        "console/invoices.html",
        section=SECTION,
        title="Invoices",
        invoices=current.object_list,
        pager=current,
        pager_query=query_without_page(request),
        tenant=tenant,
        status_filter=status,
        month=request.GET.get("month", "").strip()[:7],
        statuses=Invoice.Status.values,
    )


def stripe_state(tenant: Tenant) -> dict[str, object]:
    """What the console says of a tenant's Stripe sync: its customer, how many meter
    events were sent and are waiting, and the newest error Stripe answered."""
    events = MeterEvent.objects.filter(usage__tenant_id=tenant.pk)
    counts = events.aggregate(
        sent=Count("id", filter=Q(sent_at__isnull=False)),
        waiting=Count("id", filter=Q(sent_at__isnull=True)),
        last_sent=Max("sent_at"),
    )
    failing = (
        events.filter(sent_at__isnull=True)
        .exclude(last_error="")
        .order_by("-attempts", "-id")
        .values("last_error", "attempts")
        .first()
    )
    return {
        "enabled": stripe_enabled(),
        "customer": tenant.stripe_customer_id,
        "sent": counts["sent"],
        "waiting": counts["waiting"],
        "last_sent": counts["last_sent"],
        "error": failing["last_error"] if failing else "",
        "attempts": failing["attempts"] if failing else 0,
    }


@any_area("tenants", "audit")
@require_GET
def invoice_detail(request: HttpRequest, invoice_id: int) -> HttpResponse:
    invoice = get_object_or_404(Invoice.objects.select_related("tenant"), pk=invoice_id)
    return page(
        request,
        "console/invoice_detail.html",
        section=SECTION,
        title=f"Invoice {invoice.tenant.name} {invoice.period_start:%Y-%m}",
        invoice=invoice,
        lines=invoice.lines if isinstance(invoice.lines, list) else [],
        stripe=stripe_state(invoice.tenant),
        may_rebuild=can(request, "tenants") and invoice.status == Invoice.Status.DRAFT,
    )


@operator_page("tenants")
@require_POST
@action(SECTION, back=lambda invoice_id, **kw: f"/console/invoices/{invoice_id}")
def invoice_rebuild(request: HttpRequest, invoice_id: int) -> str:
    """POST: refresh a draft from the usage recorded for its month (a final one stays)."""
    invoice = get_object_or_404(Invoice.objects.select_related("tenant"), pk=invoice_id)
    if invoice.status != Invoice.Status.DRAFT:
        return "A final invoice is never rebuilt."
    built = invoice_build(
        tenant=invoice.tenant, year=invoice.period_start.year, month=invoice.period_start.month
    )
    return f"The draft was rebuilt from the recorded usage: total {built.total} {built.currency}."


urlpatterns = [
    path("invoices", invoice_list, name="console-invoices"),
    path("invoices/<int:invoice_id>", invoice_detail, name="console-invoice"),
    path("invoices/<int:invoice_id>/rebuild", invoice_rebuild),
]
