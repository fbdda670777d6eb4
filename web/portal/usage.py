"""/portal/t/<tenant>/usage and /billing: usage and cost over a chosen range (charts, a
table and its CSV, all read from the daily roll-up), the plan, its limits and what is
left of today's quotas; invoices with their lines.

Every member sees usage; keys (grouping or filtering by key) only the roles that see keys
(web.portal.access.ROLES_KEYS); billing and invoices only ROLES_BILLING. A key id in the
query is looked up among the tenant's keys: another tenant's is a 404, never data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing.models import Invoice
from billing.selectors import (
    key_labels,
    usage_daily_csv,
    usage_daily_table,
    usage_daily_totals,
    usage_day_totals,
    usage_today,
)
from tenants.selectors import effective_limits
from web.portal.access import ROLES_BILLING, ROLES_KEYS, Member, member_page

RANGES = {
    "month": "This month",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "custom": "Custom dates",
}
GROUPS = {"day": "Day", "model": "Model", "key": "API key", "modality": "Modality"}
MAX_DAYS = 366  # the longest custom range
EARLIEST = date(2000, 1, 1)
METRICS = ("requests", "tokens", "cost")


class BadRange(ValueError):
    """A query the page cannot answer: shown to the person with a 400."""


@dataclass(frozen=True)
class Query:
    """What the usage page was asked for, validated."""

    range: str
    start: date
    end: date
    group: str
    key_id: int | None

    def params(self, **override: Any) -> str:
        values: dict[str, Any] = {"range": self.range, "group": self.group}
        if self.range == "custom":
            values.update(start=self.start.isoformat(), end=self.end.isoformat())
        if self.key_id is not None:
            values["key"] = self.key_id
        values.update(override)
        return urlencode(values)


def _today() -> date:
    return datetime.now(UTC).date()


def _day(text: str, name: str) -> date:
    try:
        value = date.fromisoformat(text.strip())
    except ValueError:
        raise BadRange(f"The {name} date {text[:40]!r} is not a date (use YYYY-MM-DD).") from None
    return value


def parse_query(params: Any, member: Member) -> Query:
    """The range (this month, the last 7/30/90 days, or custom dates, at most MAX_DAYS
    long, not before EARLIEST nor after today, UTC), the grouping and the key filter.
    BadRange for anything else; Http404 for a key that is not this tenant's or a role
    that does not see keys."""
    today = _today()
    kind = params.get("range") or "month"
    if kind not in RANGES:
        raise BadRange(f"Unknown range {kind[:40]!r}: choose one of {', '.join(RANGES)}.")
    if kind == "month":
        start, end = today.replace(day=1), today
    elif kind == "custom":
        if not params.get("start") or not params.get("end"):
            raise BadRange("A custom range needs both a start and an end date.")
        start, end = _day(params["start"], "start"), _day(params["end"], "end")
        if end < start:
            raise BadRange(f"The range ends ({end}) before it starts ({start}).")
        if start < EARLIEST:
            raise BadRange(f"The range cannot start before {EARLIEST}.")
        if end > today:
            raise BadRange(f"The range cannot end after today ({today}, UTC).")
        if (end - start).days + 1 > MAX_DAYS:
            raise BadRange(f"A range can be at most {MAX_DAYS} days long.")
    else:
        days = int(kind[:-1])
        start, end = today - timedelta(days=days - 1), today
    group = params.get("group") or "day"
    if group not in GROUPS:
        raise BadRange(f"Unknown grouping {group[:40]!r}: choose one of {', '.join(GROUPS)}.")
    sees_keys = member.can(*ROLES_KEYS)
    if group == "key" and not sees_keys:
        raise Http404("no such grouping")
    key_id: int | None = None
    raw_key = params.get("key") or ""
    if raw_key:
        if not sees_keys:
            raise Http404("no such key")
        try:
            key_id = int(raw_key)
        except ValueError:
            raise BadRange(f"The key {raw_key[:40]!r} is not a key id.") from None
        if key_id not in key_labels(tenant_id=member.tenant.pk):
            raise Http404("no such key")  # another tenant's, or none: the same answer
    return Query(range=kind, start=start, end=end, group=group, key_id=key_id)


# --- the usage page ------------------------------------------------------------------

LIMIT_ROWS = (
    # (limit field, label, today's counter in the limiter or None)
    ("requests_per_day", "Requests per day", "requests"),
    ("tokens_per_day", "Tokens per day", "tokens"),
    ("images_per_day", "Images per day", "images"),
    ("audio_seconds_per_day", "Audio seconds per day", "audio_seconds"),
    ("characters_per_day", "Speech characters per day", "characters"),
    ("requests_per_minute", "Requests per minute", None),
    ("tokens_per_minute", "Tokens per minute", None),
    ("max_concurrent", "Requests at once", None),
)


def limits_context(member: Member) -> dict[str, Any]:
    """The plan, its limits with the tenant's overrides, and today's used and remaining
    amounts of each daily quota as the gate counts them (read, never consumed)."""
    tenant = member.tenant
    limits = effective_limits(tenant)
    used = usage_today(tenant_id=tenant.pk)
    # The limiter counts only what a limit applies to; an unlimited quota's use today is
    # read from the daily roll-up (finished requests).
    finished = usage_day_totals(tenant_id=tenant.pk, day=timezone.now().date())
    rows = []
    for name, label, counter in LIMIT_ROWS:
        limit = limits.get(name)
        row: dict[str, Any] = {"name": name, "label": label, "limit": limit, "daily": counter}
        if counter is not None and (used is not None or limit is None):
            counted = used.get(counter, 0.0) if used is not None else 0.0
            amount = counted if limit is not None else max(counted, finished[counter])
            row["used"] = _number(amount)
            row["used_value"] = amount
            if limit is not None:
                row["remaining"] = _number(max(0.0, limit - amount))
                row["fraction"] = min(1.0, amount / limit) if limit else 1.0
        rows.append(row)
    plan = tenant.plan
    overridden = sorted(
        k for k in (tenant.overrides if isinstance(tenant.overrides, dict) else {}) if k in limits
    )
    return {
        "plan": plan,
        "plan_name": plan.name if plan is not None else tenant.tier,
        "limit_rows": rows,
        "limits_live": used is not None,
        "overridden": overridden,
    }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


@require_GET
@member_page()
def usage_page(request: HttpRequest, member: Member) -> HttpResponse:
    """GET /portal/t/<tenant>/usage: range picker, charts, table, CSV link, limits."""
    context: dict[str, Any] = {
        "face": "portal",
        "section": "usage",
        "title": f"Usage · {member.tenant.name} · rbee portal",
        "member": member,
        "ranges": RANGES,
        "groups": {k: v for k, v in GROUPS.items() if k != "key" or member.can(*ROLES_KEYS)},
        "keys": sorted(key_labels(tenant_id=member.tenant.pk).items(), key=lambda kv: kv[1])
        if member.can(*ROLES_KEYS)
        else [],
        "sees_keys": member.can(*ROLES_KEYS),
        **limits_context(member),
    }
    try:
        query = parse_query(request.GET, member)
    except BadRange as exc:
        context.update(
            error=str(exc),
            form=request.GET,
            query=None,
        )
        return render(request, "portal/usage.html", context, status=400)
    rows = usage_daily_table(
        tenant_id=member.tenant.pk,
        start=query.start,
        end=query.end,
        group_by=query.group,
        key_id=query.key_id,
    )
    base = f"/portal/t/{member.tenant.name}"
    context.update(
        query=query,
        form={
            "range": query.range,
            "start": query.start.isoformat(),
            "end": query.end.isoformat(),
            "group": query.group,
            "key": str(query.key_id or ""),
        },
        rows=rows,
        totals=usage_daily_totals(rows),
        group_label=GROUPS[query.group],
        csv_url=f"{base}/usage.csv?{query.params()}",
        charts=[
            (
                f"{base}/usage/chart/{metric}?{query.params()}",
                title,
                label,
            )
            for metric, title, label in (
                ("requests", "Requests per day", "requests per day"),
                ("tokens", "Tokens per day", "prompt and completion tokens per day"),
                ("cost", "Cost per day", "cost per day"),
            )
        ],
        days=usage_daily_table(
            tenant_id=member.tenant.pk,
            start=query.start,
            end=query.end,
            group_by="day",
            key_id=query.key_id,
        )
        if query.group != "day"
        else rows,
    )
    return render(request, "portal/usage.html", context)


@require_GET
@member_page()
def usage_chart(request: HttpRequest, member: Member, metric: str) -> HttpResponse:
    """GET /portal/t/<tenant>/usage/chart/<requests|tokens|cost>: a chart's JSON
    (web/static/web/charts.js): one point per UTC day of the range."""
    if metric not in METRICS:
        raise Http404("no such chart")
    try:
        query = parse_query(request.GET, member)
    except BadRange as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    days = usage_daily_table(
        tenant_id=member.tenant.pk,
        start=query.start,
        end=query.end,
        group_by="day",
        key_id=query.key_id,
    )
    x = [
        int(datetime.combine(date.fromisoformat(r["group"]), time.min, tzinfo=UTC).timestamp())
        for r in days
    ]
    if metric == "requests":
        unit, series = "req", [{"label": "Requests", "values": [r["requests"] for r in days]}]
    elif metric == "tokens":
        unit = ""  # the title says tokens; a unit on every tick would not fit the axis
        series = [
            {"label": "Prompt tokens", "values": [r["prompt_tokens"] for r in days]},
            {"label": "Completion tokens", "values": [r["completion_tokens"] for r in days]},
        ]
    else:
        unit = days[0]["currency"].upper() if days else ""
        series = [{"label": "Cost", "values": [float(r["cost"]) for r in days]}]
    return JsonResponse({"x": x, "unit": unit, "series": series})


@require_GET
@member_page()
def usage_csv(request: HttpRequest, member: Member) -> HttpResponse:
    """GET /portal/t/<tenant>/usage.csv: the table's rows, as the page shows them."""
    try:
        query = parse_query(request.GET, member)
    except BadRange as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    rows = usage_daily_table(
        tenant_id=member.tenant.pk,
        start=query.start,
        end=query.end,
        group_by=query.group,
        key_id=query.key_id,
    )
    # At most one line per day of the longest range (or per model, key, modality).
    response = HttpResponse(
        "".join(usage_daily_csv(rows, group_by=query.group)),
        content_type="text/csv; charset=utf-8",
    )
    name = f"{member.tenant.name}-usage-by-{query.group}-{query.start}-{query.end}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


# --- billing: plan and invoices --------------------------------------------------------


@require_GET
@member_page(*ROLES_BILLING)
def billing_page(request: HttpRequest, member: Member) -> HttpResponse:
    """GET /portal/t/<tenant>/billing: the plan, its limits and the invoices."""
    invoices = Invoice.objects.filter(tenant_id=member.tenant.pk).order_by("-period_start", "-pk")
    return render(
        request,
        "portal/billing.html",
        {
            "face": "portal",
            "section": "billing",
            "title": f"Billing · {member.tenant.name} · rbee portal",
            "member": member,
            "invoices": list(invoices),
            **limits_context(member),
        },
    )


@require_GET
@member_page(*ROLES_BILLING)
def invoice_page(request: HttpRequest, member: Member, invoice_id: int) -> HttpResponse:
    """GET /portal/t/<tenant>/billing/invoices/<id>: one invoice and its lines (another
    tenant's id is a 404)."""
    invoice = Invoice.objects.filter(pk=invoice_id, tenant_id=member.tenant.pk).first()
    if invoice is None:
        raise Http404("no such invoice")
    lines = [
        {
            "model": line.get("model", ""),
            "unit": str(line.get("unit", "")).replace("_", " "),
            "quantity": line.get("quantity", ""),
            "unit_price": line.get("unit_price"),
            "amount": line.get("amount", "0"),
            "unpriced": bool(line.get("unpriced")),
        }
        for line in (invoice.lines if isinstance(invoice.lines, list) else [])
        if isinstance(line, dict)
    ]
    return render(
        request,
        "portal/billing_invoice.html",
        {
            "face": "portal",
            "section": "billing",
            "title": f"Invoice {invoice.period_start:%Y-%m} · {member.tenant.name} · rbee portal",
            "member": member,
            "invoice": invoice,
            "lines": lines,
        },
    )


T = "t/<str:tenant>"
urlpatterns = [
    path(f"{T}/usage", usage_page, name="portal-usage"),
    path(f"{T}/usage.csv", usage_csv, name="portal-usage-csv"),
    path(f"{T}/usage/chart/<str:metric>", usage_chart, name="portal-usage-chart"),
    path(f"{T}/billing", billing_page, name="portal-billing"),
    path(f"{T}/billing/invoices/<int:invoice_id>", invoice_page, name="portal-invoice"),
]
