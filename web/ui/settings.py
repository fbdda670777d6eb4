"""/ui/settings: the dashboard's Settings page.

* This queen: version, storage mode (host and database only, never a URL with its
  password), RBEE_HOME, the production profile and what it enforces, the listen address,
  hives and workers, the scheduler script in force, prompt retention's default, the audit
  checkpoint sink. Read-only; no secret is ever read into the page.
* Your account: your areas, and your own password (the current one is checked through
  the authentication backend, so wrong guesses are throttled, locked out and audited as
  failed sign-ins; the session stays signed in).
* Operators (superusers only): every operator and their areas; grant and revoke areas and
  create an operator through tenants.services, audited with the signed-in superuser as
  actor, as `rbee operator` is.
* Hive setup: the commands that connect another machine to this queen.

Any operator may view the page; the forms check their own permission on the server."""

from __future__ import annotations

import os
import re
import time
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import (
    password_validators_help_texts,
    validate_password,
)
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

import kernel
from gdpr import sinks
from hives import selectors as hive_selectors
from hives.models import Worker
from inference import selectors as inference_selectors
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services
from tenants.actors import user_actor
from tenants.auth import LoginLocked, client_address, locked_for, subjects
from tenants.errors import TenantError, TenantErrorCode
from tenants.models import OPERATOR_AREAS, Tenant
from web.auth import operator_page
from web.services import LINK_TTL
from web.ui.login_link import LINK_SIGNIN_AT

AREAS: tuple[str, ...] = tuple(OPERATOR_AREAS)
HIVE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # as `rbee hive token` accepts
LISTEN_ENV = "RBEE_QUEEN_LISTEN"  # set by `rbee queen start` (rbee/cli/queen.py)


# This queen ------------------------------------------------------------------------------


def _database() -> dict[str, str]:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith(".sqlite3"):  # Django's, or django-prometheus' around it
        return {"kind": "SQLite (embedded)", "where": str(db["NAME"])}
    host = str(db.get("HOST") or "local socket")
    port = str(db.get("PORT") or "")
    return {
        "kind": "PostgreSQL" if "postgresql" in db["ENGINE"] else db["ENGINE"].rsplit(".", 1)[-1],
        "where": f"{host}{':' + port if port else ''} / {db.get('NAME', '')}",
    }


def _redis() -> dict[str, str]:
    if not settings.REDIS_URL:
        return {"kind": "in-memory channel layer (this process only)", "where": ""}
    parts = urlsplit(settings.REDIS_URL)
    db = parts.path.strip("/") or "0"
    port = f":{parts.port}" if parts.port else ""
    return {"kind": "Redis", "where": f"{parts.hostname or '?'}{port} / db {db}"}


def _checkpoint_sink() -> str:
    """Where the audit log's signed checkpoints go (gdpr.sinks.get_sink's choice), without
    opening it: the bucket and prefix, or the directory."""
    url = os.environ.get("RBEE_AUDIT_CHECKPOINT_S3", "")
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        endpoint = urlsplit(os.environ.get("RBEE_AUDIT_S3_ENDPOINT", "")).hostname
        return f"S3 bucket {bucket}, prefix {prefix or '(none)'}" + (
            f" at {endpoint}" if endpoint else ""
        )
    if url:
        return "misconfigured: RBEE_AUDIT_CHECKPOINT_S3 is not s3://BUCKET[/PREFIX]"
    return f"directory {sinks.default_dir()}"


def _listen(request: HttpRequest) -> str:
    recorded = os.environ.get(LISTEN_ENV, "")
    if recorded:
        return recorded
    return f"{request.META.get('SERVER_NAME', '?')}:{request.META.get('SERVER_PORT', '?')}"


def queen_facts(request: HttpRequest) -> dict[str, Any]:
    """What the page says about this queen: settings and counts, nothing secret."""
    production = bool(settings.RBEE_PRODUCTION)
    retention = Tenant._meta.get_field("prompt_retention").default
    retention_days = Tenant._meta.get_field("prompt_retention_days").default
    return {
        "version": kernel.__version__,
        "database": _database(),
        "layer": _redis(),
        "embedded": not settings.REDIS_URL,
        "home": str(settings.RBEE_HOME),
        "production": production,
        "enforced": [
            ("Host names answered", ", ".join(settings.ALLOWED_HOSTS)),
            ("CSRF trusted origins", ", ".join(settings.CSRF_TRUSTED_ORIGINS) or "none"),
            ("Secure cookies", "on" if settings.SESSION_COOKIE_SECURE else "off"),
            (
                "HSTS",
                f"{settings.SECURE_HSTS_SECONDS} s" if settings.SECURE_HSTS_SECONDS else "off",
            ),
            ("Trusted proxies", ", ".join(settings.RBEE_TRUSTED_PROXIES) or "none"),
            (
                "/metrics",
                "bearer token required" if settings.RBEE_METRICS_TOKEN else "staff only",
            ),
            ("Debug", "on" if settings.DEBUG else "off"),
        ],
        "listen": _listen(request),
        "hives": hive_selectors.hive_list().count(),
        "live_hives": hive_selectors.live_hives().count(),
        "workers": Worker.objects.count(),
        "ready_workers": Worker.objects.filter(state=Worker.State.READY).count(),
        "script": inference_selectors.scheduler_script_current(),
        "prompt_retention": retention,
        "prompt_retention_days": retention_days,
        "retention_days": settings.RBEE_RETENTION_DEFAULT_DAYS,
        "sink": _checkpoint_sink(),
    }


# Your account ----------------------------------------------------------------------------


class OwnPasswordForm(PasswordChangeForm):
    """Django's password change (its validators), the current password checked through
    the authentication backend: throttled, locked out and audited like a sign-in."""

    def __init__(self, user: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        old = str(self.cleaned_data.get("old_password") or "")
        username = self.user.get_username()
        try:
            checked = authenticate(self.request, username=username, password=old)
        except LoginLocked:  # authenticate() stops at it and answers None
            checked = None
        if checked is None or checked.pk != self.user.pk:
            wait = locked_for(subjects(username, client_address(self.request)))
            if wait:
                raise ValidationError(f"Too many failed attempts: try again in {wait} s.")
            raise ValidationError(
                "Your current password was entered incorrectly.", code="password_incorrect"
            )
        return old


def link_signin_fresh(request: HttpRequest) -> bool:
    """Whether this session was signed in by a one-time link (`rbee up`'s) less than the
    link's lifetime ago: that is proof enough to set a password without the current one,
    which the owner's account made by `rbee up` never had."""
    at = request.session.get(LINK_SIGNIN_AT)
    return isinstance(at, int) and 0 <= time.time() - at < LINK_TTL.total_seconds()


def password_form(request: HttpRequest, data: Any = None) -> SetPasswordForm:
    if link_signin_fresh(request):
        return SetPasswordForm(request.user, data)
    return OwnPasswordForm(request.user, request, data)


# Operators -------------------------------------------------------------------------------


class OperatorCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    areas = forms.MultipleChoiceField(choices=[(a, a) for a in AREAS])
    password1 = forms.CharField(strip=False)
    password2 = forms.CharField(strip=False)

    def clean_username(self) -> str:
        name = str(self.cleaned_data["username"]).strip()
        if not re.fullmatch(r"[\w.@+-]+", name):
            raise ValidationError("Letters, digits and @ . + - _ only.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        one, two = data.get("password1"), data.get("password2")
        if one and two and one != two:
            self.add_error("password2", "The two passwords differ.")
        elif one:
            try:
                validate_password(one, User(username=data.get("username", "")))
            except ValidationError as exc:
                self.add_error("password1", exc)
        return data


def _superuser(request: HttpRequest) -> None:
    if not request.user.is_superuser:
        raise PermissionDenied("only a superuser manages operators")


def _operator_names() -> set[str]:
    return {name for name, _sup, _areas in tenant_selectors.operator_list()}


# The page ---------------------------------------------------------------------------------


def _hive_name(raw: str) -> str:
    name = raw.strip().lower()
    return name if HIVE_NAME.fullmatch(name) else "NAME"


def _page(request: HttpRequest, status: int = 200, **extra: Any) -> HttpResponse:
    user = request.user
    queen_url = f"{request.scheme}://{request.get_host()}"
    host = urlsplit(queen_url).hostname or ""
    hive = _hive_name(request.GET.get("hive", ""))
    context: dict[str, Any] = {
        "face": "ui",
        "section": "settings",
        "title": "Settings · rbee",
        "queen": queen_facts(request),
        "my_areas": tenant_selectors.operator_areas(user=user),
        "password_form": password_form(request),
        "link_signin": link_signin_fresh(request),
        "link_minutes": int(LINK_TTL.total_seconds() // 60),
        "password_help": password_validators_help_texts(),
        "areas": AREAS,
        "queen_url": queen_url,
        "loopback": host in {"localhost", "127.0.0.1", "::1"},
        "hive_name": hive,
        "may_tokens": user.has_perm(OPERATOR_AREAS["fleet"]),
        **extra,
    }
    if user.is_superuser:
        context["operators"] = tenant_selectors.operator_list()
        context.setdefault("create_form", OperatorCreateForm())
    return render(request, "ui/settings.html", context, status=status)


@require_GET
@operator_page()
def settings_page(request: HttpRequest) -> HttpResponse:
    return _page(request)


@require_POST
@operator_page()
def password_change(request: HttpRequest) -> HttpResponse:
    form = password_form(request, request.POST)
    if not form.is_valid():
        return _page(request, 400, password_form=form)
    user = form.save()
    update_session_auth_hash(request, user)
    request.session.pop(LINK_SIGNIN_AT, None)  # once: the next change needs the password
    messages.success(request, "Your password is changed.")
    return HttpResponseRedirect("/ui/settings#account")


@require_POST
@operator_page()
def operator_areas_set(request: HttpRequest, username: str) -> HttpResponse:
    """Set an operator's areas: grant what is newly ticked, revoke what is not."""
    _superuser(request)
    if username not in _operator_names():
        raise Http404("no such operator")
    wanted = request.POST.getlist("areas")
    if any(a not in AREAS for a in wanted):
        messages.error(request, f"Unknown area: use {', '.join(AREAS)}.")
        return HttpResponseRedirect("/ui/settings#operators")
    target = User.objects.get(username=username)
    held = set(tenant_selectors.operator_areas(user=target))
    grant = [a for a in AREAS if a in wanted and a not in held]
    revoke = [a for a in AREAS if a not in wanted and a in held]
    actor = user_actor(request.user)
    if grant:
        tenant_services.operator_grant(username=username, areas=grant, actor=actor)
    if revoke and not target.is_superuser:
        tenant_services.operator_revoke(username=username, areas=revoke, actor=actor)
    if not grant and not (revoke and not target.is_superuser):
        messages.info(request, f"{username}: nothing changed.")
    else:
        target = User.objects.get(pk=target.pk)  # a fresh permission cache
        now = ", ".join(tenant_selectors.operator_areas(user=target)) or "nothing"
        messages.success(request, f"{username} may now manage: {now}.")
    return HttpResponseRedirect("/ui/settings#operators")


@require_POST
@operator_page()
def operator_create(request: HttpRequest) -> HttpResponse:
    _superuser(request)
    form = OperatorCreateForm(request.POST)
    if not form.is_valid():
        return _page(request, 400, create_form=form)
    data = form.cleaned_data
    try:
        tenant_services.operator_create(
            username=data["username"],
            password=data["password1"],
            areas=list(data["areas"]),
            email=data.get("email") or "",
            actor=user_actor(request.user),
        )
    except TenantError as exc:
        form.add_error(
            "username" if exc.code == TenantErrorCode.ALREADY_EXISTS else None, exc.message
        )
        return _page(request, 400, create_form=form)
    messages.success(
        request, f"Operator {data['username']} created: {', '.join(sorted(data['areas']))}."
    )
    return HttpResponseRedirect("/ui/settings#operators")


urlpatterns = [
    path("settings", settings_page, name="ui-settings"),
    path("settings/password", password_change, name="ui-settings-password"),
    path("settings/operators", operator_create, name="ui-settings-operator-create"),
    path(
        "settings/operators/<str:username>/areas",
        operator_areas_set,
        name="ui-settings-operator-areas",
    ),
]
