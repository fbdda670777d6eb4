"""The portal's account pages, server side: the overview's quick start, sign-in links,
and sessions that expire. (Helpers here are shared by the other test_portal_* files.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from tenants.models import Membership, Plan, Tenant
from tenants.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db

PW = "pw-123456789"


def person(email: str) -> User:
    return User.objects.create_user(email.lower(), email, PW)


def tenant(name: str, plan_models: list[str] | None = None) -> Tenant:
    plan = None
    if plan_models is not None:
        plan = Plan.objects.create(name=f"plan-{name}", allowed_models=plan_models)
    return Tenant.objects.create(name=name, plan=plan)


def member(t: Tenant, email: str, role: str) -> User:
    user = User.objects.filter(email=email).first() or person(email)
    Membership.objects.create(tenant=t, user=user, role=role)
    return user


def signed_in(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_overview_shows_the_quick_start_with_a_placeholder_and_never_a_stored_key() -> None:
    acme = tenant("acme", ["smollm2-135m-instruct"])
    owner = member(acme, "owner@example.com", "owner")
    _key, plaintext = api_key_create(tenant=acme, name="ci")
    gone, _ = api_key_create(tenant=acme, name="old")
    api_key_revoke(api_key=gone)
    response = signed_in(owner).get("/portal/t/acme/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>acme · Overview · rbee portal</title>" in html
    assert 'value="http://testserver/v1"' in html
    assert "curl http://testserver/v1/chat/completions" in html
    assert "Bearer $RBEE_API_KEY" in html
    assert "os.environ[&quot;RBEE_API_KEY&quot;]" in html
    assert "&quot;openai_compatible&quot;" in html  # Zed
    assert "apiBase: http://testserver/v1" in html  # Continue
    assert "${{ secrets.RBEE_API_KEY }}" in html
    assert "smollm2-135m-instruct" in html
    assert plaintext not in html
    assert '<span class="muted small">Active keys</span><b>1</b>' in html
    assert 'href="/portal/t/acme/" aria-current="page"' in html


def test_signed_out_portal_pages_go_to_the_login_page_which_offers_a_reset() -> None:
    tenant("acme")
    response = Client().get("/portal/t/acme/keys")
    assert response.status_code == 302
    assert response["Location"] == "/portal/login?next=%2Fportal%2Ft%2Facme%2Fkeys"
    page = Client().get("/portal/login")
    assert page.status_code == 200
    assert b'href="/portal/password-reset"' in page.content


def test_a_session_expires_and_its_holder_is_signed_out() -> None:
    acme = tenant("acme")
    member(acme, "m@example.com", "member")
    client = Client()
    response = client.post("/portal/login", {"username": "m@example.com", "password": PW})
    assert response.status_code == 302
    assert client.cookies["sessionid"]["max-age"] == settings.SESSION_COOKIE_AGE
    assert client.get("/portal/t/acme/").status_code == 200
    key = client.session.session_key
    row = Session.objects.get(session_key=key)
    assert abs(
        row.expire_date - (timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE))
    ) < timedelta(minutes=1)
    Session.objects.filter(session_key=key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    response = client.get("/portal/t/acme/")
    assert response.status_code == 302
    assert response["Location"].startswith("/portal/login?next=")


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({}, "django.core.mail.backends.console.EmailBackend"),
        ({"RBEE_EMAIL_HOST": "smtp.example.com"}, "django.core.mail.backends.smtp.EmailBackend"),
        (
            {"RBEE_EMAIL_HOST": "smtp.example.com", "RBEE_EMAIL_BACKEND": "x.Backend"},
            "x.Backend",
        ),
    ],
)
def test_email_goes_to_the_console_unless_an_smtp_host_is_configured(
    env: dict[str, str], backend: str, tmp_path: object
) -> None:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("RBEE_EMAIL_")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.DEFAULT_FROM_EMAIL, sep='|')",
        ],
        env={**clean, "DJANGO_SETTINGS_MODULE": "rbee.settings", "RBEE_HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert out == f"{backend}|{env.get('RBEE_EMAIL_HOST', '')}|rbee <rbee@localhost>"
