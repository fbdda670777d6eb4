"""/console/: what needs an operator's attention, only the panels their areas allow:
past-due tenants (tenants), GDPR requests near or past their deadline and the audit log's
last verification (audit), offline hives and models waiting for approval (fleet)."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from hives.selectors import hive_list, pending_models
from tenants.models import Tenant
from web.auth import operator_page
from web.console.audit import VERIFIED
from web.console.common import can, page
from web.console.gdpr import near_deadline
from web.console.hives import connection_state

PANEL_ROWS = 10


@operator_page(None)
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    panels: dict[str, Any] = {}
    if can(request, "tenants"):
        past_due = Tenant.objects.filter(status=Tenant.Status.PAST_DUE).order_by("past_due_since")
        panels["tenants"] = {
            "past_due": list(past_due[:PANEL_ROWS]),
            "past_due_count": past_due.count(),
            "suspended_count": Tenant.objects.filter(status=Tenant.Status.SUSPENDED).count(),
        }
    if can(request, "audit"):
        near = near_deadline()
        panels["audit"] = {
            "near": near[:PANEL_ROWS],
            "near_count": len(near),
            "verified": cache.get(VERIFIED),
        }
    if can(request, "fleet"):
        down = [
            (h, state)
            for h in hive_list()
            if not h.disabled and (state := connection_state(h)) != "online"
        ]
        pending = list(pending_models()[:PANEL_ROWS])
        panels["fleet"] = {
            "down": down[:PANEL_ROWS],
            "down_count": len(down),
            "pending": pending,
            "pending_count": pending_models().count(),
        }
    return page(request, "console/home.html", section="home", title="Console", panels=panels)


urlpatterns = [path("", home, name="console-home")]
