"""/portal/invitations/<token>: the one-time link of an invitation e-mail. A signed-in
person whose e-mail it was sent to accepts it; a person without an account sets a
password there (the account gets the invited e-mail) and joins at once."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import login, password_validation
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from tenants.actors import user_actor
from tenants.errors import TenantError, TenantErrorCode
from tenants.models import Invitation
from tenants.selectors import invitation_by_token
from tenants.services import invitation_accept, invitation_accept_new_account
from web.portal.common import sentence

BACKEND = "tenants.auth.LockoutModelBackend"


class NewAccountForm(forms.Form):
    password1 = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput, max_length=200
    )
    password2 = forms.CharField(
        label="Password again", strip=False, widget=forms.PasswordInput, max_length=200
    )

    def clean(self) -> dict[str, str]:
        data = super().clean() or {}
        one, two = data.get("password1"), data.get("password2")
        if one and two and one != two:
            raise forms.ValidationError("The two passwords differ.")
        if one:
            password_validation.validate_password(one)
        return data


def _state(invitation: Invitation | None) -> str:
    if invitation is None:
        return "unknown"
    if invitation.accepted_at is not None:
        return "used"
    if invitation.expires_at <= timezone.now():
        return "expired"
    return "pending"


MESSAGES = {
    "unknown": "This invitation link is not valid. Ask for a new invitation.",
    "used": "This invitation was already used. Ask for a new one if you need it.",
    "expired": "This invitation has expired. Ask the tenant's owner or admin for a new one.",
}
STATUS = {"unknown": 404, "used": 410, "expired": 410, "pending": 200}


def _render(
    request: HttpRequest,
    token: str,
    invitation: Invitation | None,
    *,
    form: NewAccountForm | None = None,
    error: str = "",
    status: int | None = None,
) -> HttpResponse:
    state = _state(invitation)
    user = request.user
    email_matches = bool(
        invitation is not None
        and user.is_authenticated
        and (user.email or "").strip().casefold() == invitation.email.strip().casefold()
    )
    response = render(
        request,
        "portal/invitation.html",
        {
            "face": "portal",
            "title": "Invitation · rbee portal",
            "invitation": invitation if state == "pending" else None,
            "state": state,
            "problem": MESSAGES.get(state, ""),
            "email_matches": email_matches,
            "form": form or NewAccountForm(),
            "error": error,
            "login_url": f"/portal/login?next=/portal/invitations/{token}",
        },
        status=status or STATUS[state],
    )
    response["Cache-Control"] = "no-store"
    return response


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def invitation_page(request: HttpRequest, token: str) -> HttpResponse:
    invitation = invitation_by_token(token=token)
    if request.method == "GET" or _state(invitation) != "pending":
        return _render(request, token, invitation)
    assert invitation is not None
    if request.user.is_authenticated:
        try:
            m = invitation_accept(token=token, user=request.user, actor=user_actor(request.user))  # type: ignore[arg-type]
        except TenantError as exc:
            return _render(request, token, invitation, error=sentence(exc.message), status=400)
        messages.success(request, f"You joined {m.tenant.name} as {m.role}.")
        return HttpResponseRedirect(f"/portal/t/{m.tenant.name}/")
    form = NewAccountForm(request.POST)
    if not form.is_valid():
        return _render(request, token, invitation, form=form, status=400)
    try:
        m = invitation_accept_new_account(token=token, password=form.cleaned_data["password1"])
    except TenantError as exc:
        status = 404 if exc.code == TenantErrorCode.NOT_FOUND else 400
        return _render(request, token, invitation, error=sentence(exc.message), status=status)
    login(request, m.user, backend=BACKEND)
    messages.success(
        request, f"Welcome: your account is ready and you joined {m.tenant.name} as {m.role}."
    )
    return HttpResponseRedirect(f"/portal/t/{m.tenant.name}/")
