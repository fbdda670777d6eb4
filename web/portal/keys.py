"""/portal/t/<tenant>/keys: the tenant's API keys. Owners and admins create, rotate and
revoke them; members see them; billing members do not see keys at all (404). A new
key's secret is in the answer to the POST that made it and nowhere else: not in the
session, not in a log, not in any later page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from tenants.actors import user_actor
from tenants.errors import TenantError
from tenants.models import ApiKey
from tenants.selectors import api_key_list, api_key_of
from tenants.services import SCOPE_ENDPOINTS, api_key_create, api_key_revoke, api_key_rotate
from web.portal.access import ROLES_KEYS, ROLES_MANAGE, Member, member_page
from web.portal.common import base_url, check_id, forbidden, page, quickstart, tenant_models

EXPIRY_CHOICES = [
    ("", "Never"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("365", "In a year"),
]
GRACE_CHOICES = [
    ("0", "None: the old key stops now"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("604800", "7 days"),
]
MAY_NOT_MANAGE = "Only the tenant's owners and admins create, rotate and revoke keys."


class KeyForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, label="Name")
    endpoints = forms.MultipleChoiceField(
        choices=[(e, e) for e in SCOPE_ENDPOINTS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Endpoints (none ticked: all)",
    )
    models = forms.MultipleChoiceField(
        choices=[],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Models (none ticked: all the plan allows)",
    )
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False, label="Expires")

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["models"].choices = [(m, m) for m in models]  # type: ignore[attr-defined]

    def scopes(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self.cleaned_data["endpoints"]:
            out["endpoints"] = list(self.cleaned_data["endpoints"])
        if self.cleaned_data["models"]:
            out["models"] = list(self.cleaned_data["models"])
        return out

    def expires_at(self) -> Any:
        days = self.cleaned_data.get("expires") or ""
        return timezone.now() + timedelta(days=int(days)) if days else None


class RotateForm(forms.Form):
    grace = forms.TypedChoiceField(
        choices=GRACE_CHOICES, coerce=int, initial="86400", label="Old key keeps working for"
    )


def key_state(key: ApiKey) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return "expired"
    if key.replaced_by_id is not None:
        return "rotated"
    return "active"


def _rows(member: Member) -> list[dict[str, Any]]:
    return [
        {"key": k, "state": key_state(k), "scopes": k.scopes or {}}
        for k in api_key_list(tenant=member.tenant).order_by("-created_at", "-id")
    ]


def _keys_page(
    request: HttpRequest,
    member: Member,
    *,
    form: KeyForm | None = None,
    created: dict[str, Any] | None = None,
    status: int = 200,
) -> HttpResponse:
    models = tenant_models(member.tenant)
    snippets = None
    if created is not None:
        scoped = created["key"].scopes.get("models") or models
        snippets = quickstart(
            base=base_url(request), key=created["secret"], model=scoped[0] if scoped else None
        )
    response = page(
        request,
        member,
        "portal/keys.html",
        section="keys",
        title=f"{member.tenant.name} · API keys",
        status=status,
        rows=_rows(member),
        form=form or KeyForm(models=models),
        rotate_form=RotateForm(),
        manage=member.can(*ROLES_MANAGE),
        created=created,
        snippets=snippets,
        base_url=base_url(request),
    )
    response["Cache-Control"] = "no-store"
    return response


@member_page(*ROLES_KEYS)
@require_http_methods(["GET", "POST"])
def keys_page(request: HttpRequest, member: Member) -> HttpResponse:
    """GET: the keys. POST: create one (owners and admins), its secret shown once."""
    if request.method == "GET":
        return _keys_page(request, member)
    if not member.can(*ROLES_MANAGE):
        return forbidden(request, member, MAY_NOT_MANAGE)
    form = KeyForm(request.POST, models=tenant_models(member.tenant))
    if not form.is_valid():
        return _keys_page(request, member, form=form, status=400)
    try:
        key, secret = api_key_create(
            tenant=member.tenant,
            name=form.cleaned_data["name"].strip(),
            scopes=form.scopes(),
            expires_at=form.expires_at(),
            created_by=request.user,  # type: ignore[arg-type]
            actor=user_actor(request.user),
        )
    except TenantError as exc:
        form.add_error(None, exc.message)
        return _keys_page(request, member, form=form, status=400)
    return _keys_page(request, member, created={"key": key, "secret": secret, "replaces": None})


def _key(member: Member, key_id: int) -> ApiKey:
    key = api_key_of(tenant=member.tenant, key_id=check_id(key_id))
    if key is None:
        raise Http404("no such key")
    return key


@member_page(*ROLES_KEYS)
@require_POST
def key_revoke(request: HttpRequest, member: Member, key_id: int) -> HttpResponse:
    if not member.can(*ROLES_MANAGE):
        return forbidden(request, member, MAY_NOT_MANAGE)
    key = _key(member, key_id)
    api_key_revoke(api_key=key, actor=user_actor(request.user))
    messages.success(request, f"Key {key.display} is revoked: it no longer works.")
    return HttpResponseRedirect(f"/portal/t/{member.tenant.name}/keys")


@member_page(*ROLES_KEYS)
@require_POST
def key_rotate(request: HttpRequest, member: Member, key_id: int) -> HttpResponse:
    """A new key with the same name and scopes (shown once); the old one keeps working
    for the grace period, then expires."""
    if not member.can(*ROLES_MANAGE):
        return forbidden(request, member, MAY_NOT_MANAGE)
    old = _key(member, key_id)
    if (old.scopes or {}).get("operator") is True:
        return forbidden(
            request,
            member,
            "An operator key is rotated on the queen: rbee key rotate PREFIX --tenant NAME.",
        )
    form = RotateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose how long the old key keeps working.")
        return HttpResponseRedirect(f"/portal/t/{member.tenant.name}/keys")
    try:
        new, secret = api_key_rotate(
            api_key=old,
            grace=timedelta(seconds=form.cleaned_data["grace"]),
            actor=user_actor(request.user),
        )
    except TenantError as exc:
        return _error(request, member, exc.message)
    old.refresh_from_db()
    return _keys_page(request, member, created={"key": new, "secret": secret, "replaces": old})


def _error(request: HttpRequest, member: Member, message: str) -> HttpResponse:
    messages.error(request, message)
    return _keys_page(request, member, status=400)
