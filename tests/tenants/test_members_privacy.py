"""A tenant admin adds people by inviting them (tenants/api.py, POST .../members): the
answer is the same whether or not the email has an account on the queen, and nobody
becomes a member without accepting the invitation themselves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tenants.models import Invitation, Membership
from tenants.services import membership_add, tenant_create

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests"
# What differs between two invitations by nature: their ids, addresses, times, tokens.
OWN_FIELDS = {"id", "email", "token", "created_at", "expires_at"}


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _post(c: Client, url: str, body: dict[str, Any]) -> Any:
    return c.post(url, json.dumps(body), content_type="application/json")


@pytest.fixture
def admin_of_acme() -> tuple[Client, int]:
    acme = tenant_create(name="acme")
    tenant_create(name="bolt")
    admin = User.objects.create_user("acme-admin", "admin@acme.example", PASSWORD)
    membership_add(tenant=acme, user=admin, role="admin")
    return _client(admin), acme.pk


def test_adding_by_email_answers_the_same_whether_or_not_the_account_exists(
    admin_of_acme: tuple[Client, int],
) -> None:
    c, tenant_id = admin_of_acme
    url = f"/api/tenants/{tenant_id}/members"
    User.objects.create_user("eve", "eve@else.example", PASSWORD)
    known = _post(c, url, {"email": "eve@else.example", "role": "member"})
    unknown = _post(c, url, {"email": "ghost@nowhere.example", "role": "member"})
    assert (known.status_code, unknown.status_code) == (201, 201), (known.content, unknown.content)
    a, b = known.json(), unknown.json()
    assert set(a) == set(b)
    assert {k: v for k, v in a.items() if k not in OWN_FIELDS} == {
        k: v for k, v in b.items() if k not in OWN_FIELDS
    }
    assert a["state"] == "pending" and "user_id" not in a and "username" not in a


def test_no_one_becomes_a_member_without_accepting(admin_of_acme: tuple[Client, int]) -> None:
    c, tenant_id = admin_of_acme
    eve = User.objects.create_user("eve", "eve@else.example", PASSWORD)
    r = _post(c, f"/api/tenants/{tenant_id}/members", {"email": "EVE@else.example"})
    assert r.status_code == 201, r.content
    assert not Membership.objects.filter(user=eve).exists()
    mine = _client(eve)
    assert mine.get(f"/api/tenants/{tenant_id}").status_code == 404
    assert mine.get("/api/tenants").json() == {"data": []}
    assert Invitation.objects.filter(tenant_id=tenant_id, accepted_at__isnull=True).count() == 1

    joined = _post(mine, "/api/invitations/accept", {"token": r.json()["token"]})
    assert joined.status_code == 201, joined.content
    assert Membership.objects.get(user=eve).role == "member"
    assert mine.get(f"/api/tenants/{tenant_id}").status_code == 200


def test_adding_by_username_is_refused(admin_of_acme: tuple[Client, int]) -> None:
    """A username lookup would answer differently for names that exist."""
    c, tenant_id = admin_of_acme
    User.objects.create_user("eve", "eve@else.example", PASSWORD)
    url = f"/api/tenants/{tenant_id}/members"
    answers = [_post(c, url, {"username": name}) for name in ("eve", "nobody-at-all")]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].content == answers[1].content
    assert "invitation" in answers[0].json()["error"]["message"]
    assert not Membership.objects.filter(user__username="eve").exists()
