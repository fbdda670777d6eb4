"""/portal/t/<tenant>/: the tenant at a glance and the quick-start panel."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from tenants.selectors import api_key_list, membership_list
from web.portal.access import ROLES_KEYS, Member, member_page
from web.portal.common import base_url, page, quickstart, tenant_models
from web.portal.keys import key_state


@member_page()
def overview(request: HttpRequest, member: Member) -> HttpResponse:
    """GET: plan, role, counts, and how to call the API with one of the tenant's keys."""
    models = tenant_models(member.tenant)
    sees_keys = member.can(*ROLES_KEYS)
    active_keys = (
        sum(1 for k in api_key_list(tenant=member.tenant) if key_state(k) in ("active", "rotated"))
        if sees_keys
        else None
    )
    return page(
        request,
        member,
        "portal/overview.html",
        section="overview",
        title=f"{member.tenant.name} · Overview",
        models=models,
        active_keys=active_keys,
        members=membership_list(tenant=member.tenant).count(),
        base_url=base_url(request),
        snippets=quickstart(base=base_url(request), key=None, model=models[0] if models else None),
        sees_keys=sees_keys,
    )
