"""Who may see /metrics and the /healthz inventory in production (rbee/views.py)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory, override_settings

from rbee.views import may_see_internals
from tenants.services import operator_create

pytestmark = pytest.mark.django_db
TOKEN = "metrics-" + "x" * 32


def _session_of(user: User) -> str:
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    assert store.session_key
    return store.session_key


@override_settings(RBEE_PRODUCTION=True, RBEE_METRICS_TOKEN=TOKEN)
def test_the_token_and_staff_sessions_see_internals_nobody_else() -> None:
    rf = RequestFactory()
    assert may_see_internals(rf.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))
    assert not may_see_internals(rf.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x"))
    assert not may_see_internals(rf.get("/metrics"))  # loopback (RequestFactory's address)
    fleet = operator_create(username="ops", password="pw-ops-123", areas=["fleet"])
    billing = operator_create(username="bill", password="pw-bill-123", areas=["tenants"])
    member = User.objects.create_user("joe", password="pw-joe-123")
    for user, allowed in ((fleet, True), (billing, False), (member, False)):
        request = rf.get("/metrics")
        request.COOKIES[settings.SESSION_COOKIE_NAME] = _session_of(user)
        assert may_see_internals(request) is allowed
    request = rf.get("/metrics")
    request.COOKIES[settings.SESSION_COOKIE_NAME] = "not-a-session"
    assert not may_see_internals(request)


@pytest.mark.django_db(transaction=True)
def test_the_healthz_inventory_is_for_operators_keys_not_tenants() -> None:
    """Off production, a caller from elsewhere sees hive names with an operator's key
    only: a tenant's key learns that the queen is up, nothing about the fleet."""
    from django.test import Client

    from tenants.services import api_key_create, tenant_create

    acme = tenant_create(name="acme")
    _, tenant_key = api_key_create(tenant=acme)
    _, operator_key = api_key_create(tenant=acme, scopes={"operator": True})
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    c = Client()
    for key, sees in ((None, False), (tenant_key, False), (operator_key, True)):
        auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
        body = c.get("/healthz", **remote, **auth).json()
        assert body["status"] == "ok"
        assert ("hives" in body) is sees, (key is operator_key, body)
    assert "hives" in c.get("/healthz").json()  # this machine (loopback) sees it
