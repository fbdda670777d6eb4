"""/console/plans: the plans (limits, models, queue weight, highest priority) and the
price book. Area `tenants`. Plans are created and edited through the management API's
own serializers and audited by tenants.services.plan_audit, as POST/PATCH /api/plans do.
Prices are set through billing.services.price_set (audited as price.set)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_GET, require_POST
from rest_framework import serializers

from billing.models import Price
from billing.services import price_set
from tenants.actors import user_actor
from tenants.api import PlanInput, PlanUpdateInput
from tenants.models import Plan
from tenants.selectors import plan_list
from tenants.services import plan_audit
from web.auth import operator_page
from web.console.common import action, page

SECTION = "plans"
UNLIMITED = ("none", "unlimited", "null")


def plan_data(post: QueryDict, *, partial: bool) -> dict[str, Any]:
    """The form's fields as the API's JSON body: a blank limit is unlimited (None), the
    models one a line or comma-separated."""
    data: dict[str, Any] = {}
    for field in ("name", "description", "stripe_price_id", "queue_weight", "max_priority"):
        if field in post:
            data[field] = post.get(field, "").strip()
    for field in Plan.LIMIT_FIELDS:
        if field in post:
            value = post.get(field, "").strip()
            data[field] = None if value == "" or value.lower() in UNLIMITED else value
    if "allowed_models" in post:
        text = post.get("allowed_models", "").replace(",", "\n")
        data["allowed_models"] = [m.strip() for m in text.splitlines() if m.strip()]
    if partial:
        data.pop("name", None)
    return data


@operator_page("tenants")
@require_GET
def plans(request: HttpRequest) -> HttpResponse:
    """GET /console/plans: the plans and the price book."""
    return page(
        request,
        "console/plans.html",
        section=SECTION,
        title="Plans and prices",
        plans=[(p, [getattr(p, f) for f in Plan.LIMIT_FIELDS]) for p in plan_list()],
        limit_fields=Plan.LIMIT_FIELDS,
        prices=Price.objects.select_related("plan").order_by("plan__name", "model", "unit"),
        units=Price.Unit.values,
    )


@operator_page("tenants")
@require_POST
@action(SECTION, back=lambda **kw: "/console/plans")
def plan_new(request: HttpRequest) -> str:
    body = PlanInput(data=plan_data(request.POST, partial=False))
    body.is_valid(raise_exception=True)
    with transaction.atomic():
        plan = body.save()
        plan_audit(plan=plan, created=True, actor=user_actor(request.user))
    return f"The plan {plan.name} was created."


@operator_page("tenants")
@require_GET
def plan_detail(request: HttpRequest, name: str) -> HttpResponse:
    plan = get_object_or_404(Plan, name=name)
    return page(
        request,
        "console/plan_detail.html",
        section=SECTION,
        title=f"Plan {plan.name}",
        plan=plan,
        limits=[(f, getattr(plan, f)) for f in Plan.LIMIT_FIELDS],
        models_text="\n".join(plan.allowed_models or []),
        tenants=plan.tenants.order_by("name")[:100],
        prices=Price.objects.filter(plan=plan).order_by("model", "unit"),
    )


@operator_page("tenants")
@require_POST
@action(SECTION, back=lambda name, **kw: f"/console/plans/{name}")
def plan_edit(request: HttpRequest, name: str) -> str:
    plan = get_object_or_404(Plan, name=name)
    if request.POST.get("name", plan.name) != plan.name:
        raise serializers.ValidationError("a plan cannot be renamed")
    body = PlanUpdateInput(plan, data=plan_data(request.POST, partial=True), partial=True)
    body.is_valid(raise_exception=True)
    with transaction.atomic():
        plan = body.save()
        plan_audit(plan=plan, created=False, actor=user_actor(request.user))
    return f"The plan {plan.name} was saved."


@operator_page("tenants")
@require_POST
@action(SECTION, back=lambda **kw: "/console/plans", missing=400)
def price_new(request: HttpRequest) -> str:
    """POST /console/prices {plan?, model, unit, unit_price, currency}: set one price."""
    row, created = price_set(
        model=request.POST.get("model", ""),
        unit=request.POST.get("unit", ""),
        unit_price=request.POST.get("unit_price", ""),
        plan_name=request.POST.get("plan", "").strip() or None,
        currency=request.POST.get("currency", "usd"),
        actor=user_actor(request.user),
    )
    who = row.plan.name if row.plan is not None else "the default"
    return (
        f"{'Set' if created else 'Changed'} {who} price of {row.unit} of {row.model}: "
        f"{format(row.unit_price.normalize(), 'f')} {row.currency}."
    )


urlpatterns = [
    path("prices", price_new),
    path("plans", plans, name="console-plans"),
    path("plans/new", plan_new),
    path("plans/<slug:name>", plan_detail, name="console-plan"),
    path("plans/<slug:name>/edit", plan_edit),
]
