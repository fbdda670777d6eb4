"""Who may see a page of the web faces, decided on the server for every request.

Operators sign in at /ui/login (the same Django users and permissions as the management
API: tenants.permissions); tenants' members sign in at /portal/login with their e-mail.
Both go through the configured authentication backend, so failed sign-ins are throttled
and locked out (tenants.auth.LockoutModelBackend)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from tenants.auth import LoginLocked, client_address, locked_for, subjects
from tenants.permissions import may_operate
from tenants.selectors import operator_areas

View = TypeVar("View", bound=Callable[..., HttpResponse])

OPERATOR_LOGIN = "/ui/login"


def safe_next(request: HttpRequest, default: str) -> str:
    """The `next` parameter when it points back into this queen, else `default`."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def is_operator(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and operator_areas(user=user))


def operator_page(area: str | None = None) -> Callable[[View], View]:
    """A page for operators: signed out -> the login page (and back); signed in without
    the area's permission (or without any, when `area` is None) -> 403."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                query = urlencode({"next": request.get_full_path()})
                return HttpResponseRedirect(f"{OPERATOR_LOGIN}?{query}")
            allowed = may_operate(user, area) if area else is_operator(user)
            if not allowed:
                raise PermissionDenied(
                    f"this page needs the operators' {area} permission"
                    if area
                    else "this account is not an operator"
                )
            return view(request, *args, **kwargs)

        return never_cache(wrapped)  # type: ignore[return-value]

    return decorate


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def operator_login(request: HttpRequest) -> HttpResponse:
    """GET/POST /ui/login: an operator's username and password."""
    destination = safe_next(request, "/ui/")
    if request.user.is_authenticated and is_operator(request.user):
        return HttpResponseRedirect(destination)
    form = AuthenticationForm(request, data=request.POST or None)
    error = ""
    if request.method == "POST":
        try:
            valid = form.is_valid()
        except LoginLocked as locked:
            valid, error = False, str(locked)
        if valid:
            user = form.get_user()
            if not is_operator(user):
                error = "This account holds no operator permission."
            else:
                login(request, user)
                return HttpResponseRedirect(destination)
        elif not error:
            error = failed_sign_in_message(request, request.POST.get("username", ""))
    status = 200 if not error else 400
    return render(
        request,
        "web/login.html",
        {
            "face": "ui",
            "title": "Sign in · rbee",
            "heading": "Operators' sign-in",
            "form": form,
            "error": error,
            "next": destination,
            "user_label": "Username",
        },
        status=status,
    )


def failed_sign_in_message(request: HttpRequest, username: str) -> str:
    """What a failed sign-in hears: the lockout's wait when the name or the address is
    locked, else one message for an unknown name and a wrong password alike."""
    wait = locked_for(subjects(username, client_address(request)))
    if wait:
        return f"Too many failed sign-ins: try again in {wait} s."
    return "Unknown account or wrong password."


def authenticate_email(request: HttpRequest, email: str, password: str) -> Any:
    """The portal user with this e-mail and password, or None (one answer for an unknown
    e-mail and a wrong password: nobody learns who has an account)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User.objects.filter(email__iexact=email.strip()).order_by("pk").first()
    username = user.get_username() if user is not None else email.strip()
    return authenticate(request, username=username, password=password)


@require_POST
@csrf_protect
def sign_out(request: HttpRequest) -> HttpResponse:
    """POST /ui/logout and /portal/logout: end the session, back to that face's login."""
    face = "portal" if request.path.startswith("/portal") else "ui"
    logout(request)
    return HttpResponseRedirect(f"/{face}/login")
