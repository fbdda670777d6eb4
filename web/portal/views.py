"""The portal's sign-in and its front door (which tenant)."""

from __future__ import annotations

from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from web.auth import authenticate_email, failed_sign_in_message, safe_next
from web.portal.access import PORTAL_LOGIN, memberships


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def portal_login(request: HttpRequest) -> HttpResponse:
    """GET/POST /portal/login: a member's e-mail and password."""
    destination = safe_next(request, "/portal/")
    email = request.POST.get("username", "").strip()
    error = ""
    if request.method == "POST":
        user = authenticate_email(request, email, request.POST.get("password", ""))
        if user is not None and user.is_active:
            login(request, user)
            return HttpResponseRedirect(destination)
        error = failed_sign_in_message(request, email)
    return render(
        request,
        "portal/login.html",
        {
            "face": "portal",
            "title": "Sign in · rbee portal",
            "heading": "Sign in to your account",
            "form": {"username": {"value": email}},
            "error": error,
            "next": destination,
            "user_label": "E-mail",
        },
        status=400 if error else 200,
    )


@never_cache
def home(request: HttpRequest) -> HttpResponse:
    """GET /portal/: the user's tenants (straight into the only one)."""
    if not request.user.is_authenticated:
        return HttpResponseRedirect(PORTAL_LOGIN)
    mine = memberships(request.user)
    if len(mine) == 1:
        return HttpResponseRedirect(f"/portal/t/{mine[0].tenant.name}/")
    return render(
        request,
        "web/portal_home.html",
        {"face": "portal", "title": "Your tenants · rbee portal", "memberships": mine},
    )
