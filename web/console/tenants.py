"""/console/tenants: every tenant (search, paging, this month's usage and revenue), one
tenant (plan, limits, status, data region, keys, members, usage by day and model), and
creating one. Area `tenants`; every change goes through tenants.services, audited with
the signed-in operator as actor, validated by the management API's own serializers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from billing.selectors import month_bounds, usage_daily_table, usage_summary
from tenants.actors import user_actor
from tenants.api import TenantDetailApi
from tenants.models import ApiKey, Membership, Plan, Tenant
from tenants.selectors import effective_limits, plan_list
from tenants.services import (
    api_key_revoke,
    tenant_create,
    tenant_set_overrides,
    tenant_set_plan,
    tenant_set_residency,
    tenant_set_status,
)
from web.auth import operator_page
from web.console.common import (
    action,
    invalid,
    page,
    paged,
    query_without_page,
    scopes_text,
)
from web.dates import parse_month

SECTION = "tenants"
UNLIMITED = ("none", "unlimited", "null")


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def month_totals(tenant_id: int, month: str) -> dict[str, Any]:
    """A tenant's requests, tokens and revenue (its plan's prices) in a YYYY-MM month, from
    the daily roll-up (billing.models.UsageDaily, what the portal shows): a few rows per
    model and day rather than a scan of the month's raw usage events, which the tenant
    list did for each of its 25 tenants."""
    start, end = month_bounds(month)
    rows = usage_daily_table(
        tenant_id=tenant_id,
        start=start.date(),
        end=(end - timedelta(days=1)).date(),
        group_by="model",
    )
    return {
        "requests": sum(r["requests"] for r in rows),
        "tokens": sum(r["total_tokens"] for r in rows),
        "revenue": str(sum((r["cost"] for r in rows), Decimal(0))),
        "currency": rows[0]["currency"] if rows else "",
    }


@operator_page("tenants")
@require_GET
def tenant_list(request: HttpRequest) -> HttpResponse:
    """GET /console/tenants?q=&status=&page=: the tenants, 25 a page."""
    q = request.GET.get("q", "").strip()[:64]
    status = request.GET.get("status", "")
    rows = Tenant.objects.select_related("plan").order_by("name")
    if q:
        rows = rows.filter(Q(name__icontains=q) | Q(plan__name__icontains=q))
    if status in Tenant.Status.values:
        rows = rows.filter(status=status)
    current = paged(request, rows)
    month = this_month()
    tenants = [(t, month_totals(t.pk, month)) for t in current.object_list]
    return page(
        request,
        "console/tenants.html",
        section=SECTION,
        title="Tenants",
        tenants=tenants,
        pager=current,
        pager_query=query_without_page(request),
        q=q,
        status_filter=status,
        statuses=Tenant.Status.values,
        plans=plan_list(),
        month=month,
    )


@operator_page("tenants")
@require_POST
@action(SECTION, back=lambda **kw: "/console/tenants", missing=400)
def tenant_new(request: HttpRequest) -> HttpResponse | str:
    """POST /console/tenants/new {name, plan, data_region}: a new tenant."""
    plan = request.POST.get("plan", "").strip()
    tenant = tenant_create(
        name=request.POST.get("name", "").strip(),
        plan=plan or None,
        data_region=request.POST.get("data_region", ""),
        actor=user_actor(request.user),
    )
    return HttpResponseRedirect(f"/console/tenants/{tenant.name}")


def _tenant(name: str) -> Tenant:
    return get_object_or_404(Tenant.objects.select_related("plan"), name=name)


@operator_page("tenants")
@require_GET
def tenant_detail(request: HttpRequest, name: str) -> HttpResponse:
    """GET /console/tenants/<name>?month=YYYY-MM: everything about one tenant."""
    tenant = _tenant(name)
    month = request.GET.get("month", "") or this_month()
    try:
        start, end = month_bounds(parse_month(month, "month").strftime("%Y-%m"))
    except ValueError as exc:
        return invalid(request, str(exc), section=SECTION, back=f"/console/tenants/{name}")
    by_day = usage_summary(tenant_id=tenant.pk, start=start, end=end, group_by="day")
    by_model = usage_summary(tenant_id=tenant.pk, start=start, end=end, group_by="model")
    revenue = sum((Decimal(r["cost"]) for r in by_model), Decimal(0))
    limits = effective_limits(tenant)
    overrides = tenant.overrides if isinstance(tenant.overrides, dict) else {}
    return page(
        request,
        "console/tenant_detail.html",
        section=SECTION,
        title=f"Tenant {tenant.name}",
        tenant=tenant,
        plans=plan_list(),
        limits=[(f, limits.get(f), f in overrides, overrides.get(f)) for f in Plan.LIMIT_FIELDS],
        keys=[
            (k, scopes_text(k.scopes))
            for k in ApiKey.objects.filter(tenant=tenant).order_by("-created_at", "-id")
        ],
        members=Membership.objects.select_related("user")
        .filter(tenant=tenant)
        .order_by("created_at", "id"),
        month=month,
        by_day=by_day,
        by_model=by_model,
        revenue=str(revenue),
        currency=by_model[0]["currency"] if by_model else "",
        statuses=Tenant.Status,
    )


def _back(name: str, **_: Any) -> str:
    return f"/console/tenants/{name}"


def _patch(request: HttpRequest, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `data`, validated exactly as PATCH /api/tenants/<id> validates them."""
    body = TenantDetailApi.InputSerializer(data=data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


@operator_page("tenants")
@require_POST
@action(SECTION, back=_back)
def tenant_plan(request: HttpRequest, name: str) -> str:
    tenant = _tenant(name)
    v = _patch(request, {"plan": request.POST.get("plan", "")})
    tenant_set_plan(tenant=tenant, plan_name=v["plan"], actor=user_actor(request.user))
    return f"{tenant.name} is now on the plan {v['plan']}."


@operator_page("tenants")
@require_POST
@action(SECTION, back=_back)
def tenant_status(request: HttpRequest, name: str) -> str:
    tenant = _tenant(name)
    v = _patch(request, {"status": request.POST.get("status", "")})
    tenant_set_status(tenant=tenant, status=v["status"], actor=user_actor(request.user))
    return f"{tenant.name} is now {v['status']}."


@operator_page("tenants")
@require_POST
@action(SECTION, back=_back)
def tenant_overrides(request: HttpRequest, name: str) -> str:
    """Each limit field filled in: a number, or "unlimited"; blank ones are left alone."""
    tenant = _tenant(name)
    raw: dict[str, Any] = {}
    for field in Plan.LIMIT_FIELDS:
        value = request.POST.get(field, "").strip()
        if value:
            raw[field] = None if value.lower() in UNLIMITED else value
    if not raw:
        return "No limit was filled in: nothing changed."
    v = _patch(request, {"overrides": raw})
    tenant_set_overrides(tenant=tenant, overrides=v["overrides"], actor=user_actor(request.user))
    return f"{tenant.name}'s limits were changed: {', '.join(sorted(raw))}."


@operator_page("tenants")
@require_POST
@action(SECTION, back=_back)
def tenant_residency(request: HttpRequest, name: str) -> str:
    tenant = _tenant(name)
    v = _patch(
        request,
        {
            "data_region": request.POST.get("data_region", ""),
            "jurisdiction": request.POST.get("jurisdiction", ""),
        },
    )
    tenant_set_residency(
        tenant=tenant,
        data_region=v.get("data_region"),
        jurisdiction=v.get("jurisdiction"),
        actor=user_actor(request.user),
    )
    return f"{tenant.name}'s data region and jurisdiction were saved."


@operator_page("tenants")
@require_POST
@action(SECTION, back=_back)
def tenant_key_revoke(request: HttpRequest, name: str, key_id: int) -> str:
    tenant = _tenant(name)
    key = get_object_or_404(ApiKey, pk=key_id, tenant=tenant)
    if key.revoked_at is not None:
        return f"The key {key.display} was already revoked."
    api_key_revoke(api_key=key, actor=user_actor(request.user))
    return f"The key {key.display} is revoked."


T = "tenants/<slug:name>"
urlpatterns = [
    path("tenants", tenant_list, name="console-tenants"),
    path("tenants/new", tenant_new, name="console-tenant-new"),
    path(T, tenant_detail, name="console-tenant"),
    path(f"{T}/plan", tenant_plan),
    path(f"{T}/status", tenant_status),
    path(f"{T}/overrides", tenant_overrides),
    path(f"{T}/residency", tenant_residency),
    path(f"{T}/keys/<int:key_id>/revoke", tenant_key_revoke),
]
