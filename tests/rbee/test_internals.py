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
