"""/console/keys: API keys across every tenant, found by their prefix (the part of a key
that is not secret); revoke one. Area `tenants`. The plaintext and the hash of a key are
never read here."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from tenants.actors import user_actor
from tenants.models import ApiKey
from tenants.services import api_key_revoke
from web.auth import operator_page
from web.console.common import action, page, paged, query_without_page, scopes_text

SECTION = "keys"
# What people paste: the prefix, its display form ("sk-rbee-PREFIX-…") or a whole key.
_PREFIX = re.compile(r"^(?:sk-rbee-)?([A-Za-z0-9]{1,16})")


def prefix_of(text: str) -> str:
    """The key prefix someone searched for ("" when the text holds none)."""
    match = _PREFIX.match(text.strip())
    return match.group(1) if match else ""


@operator_page("tenants")
@require_GET
def key_search(request: HttpRequest) -> HttpResponse:
    """GET /console/keys?q=PREFIX&state=active|revoked: keys whose prefix starts so."""
    q = request.GET.get("q", "")[:200]
    prefix = prefix_of(q)
    state = request.GET.get("state", "")
    rows = ApiKey.objects.select_related("tenant").only(
        "id",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "tenant__name",
    )
    if prefix:
        rows = rows.filter(prefix__startswith=prefix)
    if state == "active":
        rows = rows.filter(revoked_at__isnull=True)
    elif state == "revoked":
        rows = rows.filter(revoked_at__isnull=False)
    current = paged(request, rows.order_by("-created_at", "-id"))
    return page(
        request,
        "console/keys.html",
        section=SECTION,
        title="API keys",
        keys=[(k, scopes_text(k.scopes)) for k in current.object_list],
        pager=current,
        pager_query=query_without_page(request),
        q=prefix,
        state=state,
    )


@operator_page("tenants")
@require_POST
@action(SECTION, back=lambda **kw: "/console/keys")
def key_revoke(request: HttpRequest, key_id: int) -> str:
    key = get_object_or_404(ApiKey.objects.select_related("tenant"), pk=key_id)
    if key.revoked_at is not None:
        return f"The key {key.display} was already revoked."
    api_key_revoke(api_key=key, actor=user_actor(request.user))
    return f"The key {key.display} of {key.tenant.name} is revoked."


urlpatterns = [
    path("keys", key_search, name="console-keys"),
    path("keys/<int:key_id>/revoke", key_revoke),
]
