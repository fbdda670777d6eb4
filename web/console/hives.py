"""/console/hives: the fleet's registry as operator data: status, region (the operator's
and the one reported), trust, disabled, token state; a new token (shown once), revoking
a token, disabling and enabling a hive, its region, and approving models it runs that
were not assigned to it. Area `fleet`; every change goes through hives.services with the
signed-in operator as actor, validated by the management API's serializers."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from hives.management_api import HiveApproveApi, HiveDetailApi
from hives.models import Hive
from hives.selectors import hive_list, pending_models
from hives.services import hive_revoke, hive_token_create, hive_update, model_approve
from tenants.actors import user_actor
from web.auth import operator_page
from web.console.common import action, invalid, page

SECTION = "hives"


def connection_state(hive: Hive) -> str:
    """online (heard from lately), stale (online but silent too long) or offline."""
    if hive.status != Hive.Status.ONLINE:
        return "offline"
    fresh = timezone.now() - timedelta(seconds=settings.RBEE_HIVE_STALE_AFTER)
    if hive.last_seen_at is None or hive.last_seen_at < fresh:
        return "stale"
    return "online"


def _listing(request: HttpRequest, *, status: int = 200, **extra: object) -> HttpResponse:
    pending = list(pending_models())
    hives = [
        (h, connection_state(h), [p for p in pending if p.hive_id == h.pk]) for h in hive_list()
    ]
    return page(
        request,
        "console/hives.html",
        section=SECTION,
        title="Hives",
        hives=hives,
        pending_count=len(pending),
        status=status,
        **extra,
    )


@operator_page("fleet")
@require_GET
def hives(request: HttpRequest) -> HttpResponse:
    """GET /console/hives."""
    return _listing(request)


@operator_page("fleet")
@require_POST
def hive_token(request: HttpRequest) -> HttpResponse:
    """POST /console/hives/token {name, region?, trust_models?}: create the hive or give it
    a new token; the token is in this answer only (never stored, never shown again)."""
    from kernel.errors import DomainError

    name = request.POST.get("name", "").strip()
    region = request.POST.get("region", "").strip()
    body = HiveDetailApi.InputSerializer(data={"region": region})
    if not body.is_valid():
        return invalid(
            request, f"region: {body.errors['region'][0]}", section=SECTION, back="/console/hives"
        )
    try:
        hive, token = hive_token_create(
            name=name,
            trust_models=True if request.POST.get("trust_models") == "on" else None,
            region=region if region else None,
            actor=user_actor(request.user),
        )
    except DomainError as exc:
        return invalid(request, exc.message, section=SECTION, back="/console/hives")
    return _listing(request, new_token=token, token_hive=hive.name)


def _back(name: str, **_: object) -> str:
    return "/console/hives"


@operator_page("fleet")
@require_POST
@action(SECTION, back=_back)
def hive_revoke_token(request: HttpRequest, name: str) -> str:
    get_object_or_404(Hive, name=name)
    hive_revoke(name=name, actor=user_actor(request.user))
    return f"The token of {name} is revoked: it is closed within a heartbeat."


@operator_page("fleet")
@require_POST
@action(SECTION, back=_back)
def hive_disable(request: HttpRequest, name: str) -> str:
    get_object_or_404(Hive, name=name)
    disabled = request.POST.get("disabled") == "true"
    hive_update(name=name, disabled=disabled, actor=user_actor(request.user))
    return f"{name} is {'disabled' if disabled else 'enabled'}."


@operator_page("fleet")
@require_POST
@action(SECTION, back=_back)
def hive_region(request: HttpRequest, name: str) -> str:
    get_object_or_404(Hive, name=name)
    body = HiveDetailApi.InputSerializer(data={"region": request.POST.get("region", "")})
    body.is_valid(raise_exception=True)
    hive = hive_update(
        name=name, region=body.validated_data["region"], actor=user_actor(request.user)
    )
    return f"{name}'s region is {hive.region or 'not set'}."


@operator_page("fleet")
@require_POST
@action(SECTION, back=_back)
def hive_approve(request: HttpRequest, name: str) -> str:
    get_object_or_404(Hive, name=name)
    body = HiveApproveApi.InputSerializer(
        data={"model": request.POST.get("model", ""), "approved": True}
    )
    body.is_valid(raise_exception=True)
    row = model_approve(
        hive_name=name, model_name=body.validated_data["model"], actor=user_actor(request.user)
    )
    return f"{name} may serve {row.model_name}."


urlpatterns = [
    path("hives", hives, name="console-hives"),
    path("hives/token", hive_token),
    path("hives/<slug:name>/revoke", hive_revoke_token),
    path("hives/<slug:name>/disable", hive_disable),
    path("hives/<slug:name>/region", hive_region),
    path("hives/<slug:name>/approve", hive_approve),
]
