"""The one-time sign-in link of `rbee up`: only its hash is stored, opening it uses
nothing up, pressing its button signs in as the owner (every area) once, and an expired
or used link signs nobody in."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from tenants.models import OPERATOR_AREAS
from tenants.selectors import operator_areas
from web import services
from web.models import LoginLink

pytestmark = pytest.mark.django_db


def _csrf(c: Client, url: str) -> str:
    page = c.get(url)
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert found, page.content
    return found.group(1)


def test_the_owner_is_made_once_with_every_area() -> None:
    owner = services.owner_operator_ensure(actor="cli:me")
    again = services.owner_operator_ensure(actor="cli:me")
    assert owner.pk == again.pk and User.objects.filter(username="owner").count() == 1
    assert owner.is_superuser and owner.is_staff
    assert sorted(operator_areas(user=owner)) == sorted(OPERATOR_AREAS)


def test_a_link_signs_in_once_and_stores_only_its_hash() -> None:
    owner = services.owner_operator_ensure(actor="cli:me")
    token = services.login_link_create(user=owner)
    link = LoginLink.objects.get()
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(v) for v in LoginLink.objects.values_list().get()}
    assert timedelta(minutes=14) < link.expires_at - timezone.now() <= timedelta(minutes=15)

    c = Client(enforce_csrf_checks=True)
    url = f"/ui/link/{token}"
    # Opening it (a link preview, a prefetch) uses nothing up and signs nobody in.
    page = c.get(url)
    assert page.status_code == 200 and b"Sign in as the owner" in page.content
    assert page["Referrer-Policy"] == "same-origin"
    assert c.get("/ui/").status_code == 302
    assert c.post(url).status_code == 403  # no CSRF token
    assert LoginLink.objects.get().used_at is None
    r = c.post(url, {"csrfmiddlewaretoken": _csrf(c, url)})
    assert (r.status_code, r["Location"]) == (302, "/ui/")
    assert c.get("/ui/").status_code == 200
    assert c.get("/console/").status_code != 403
    assert LoginLink.objects.get().used_at is not None

    # Used: a second browser gets nothing from it.
    other = Client()
    assert other.get(url).status_code == 410
    r = other.post(url)
    assert r.status_code == 410 and b"already used or has expired" in r.content
    assert other.get("/ui/").status_code == 302


def test_an_expired_or_made_up_link_signs_nobody_in() -> None:
    owner = services.owner_operator_ensure(actor="cli:me")
    token = services.login_link_create(user=owner, ttl=timedelta(seconds=-1))
    c = Client()
    for t in (token, "made-up-token", "x" * 300):
        assert c.get(f"/ui/link/{t}").status_code == 410
        assert c.post(f"/ui/link/{t}").status_code == 410
    assert c.get("/ui/").status_code == 302
    assert LoginLink.objects.get().used_at is None
