"""Where failed sign-ins are counted (tenants/auth.py): in Redis when RBEE_REDIS_URL is
set, shared by every queen replica; in Django's cache otherwise, and also when Redis does
not answer, so a sign-in is never a 500 and the lockout still holds."""

from __future__ import annotations

import base64
import socket
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tenants.services import operator_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def lock_out(c: Client) -> None:
    for _ in range(5):
        assert c.get("/api/models", **basic("ops", "wrong")).status_code == 403
    locked = c.get("/api/models", **basic("ops", "right"))
    assert locked.status_code == 429, locked.content
    assert int(locked["Retry-After"]) > 0


@pytest.mark.parametrize("redis", ["none", "unreachable"])
def test_without_a_working_redis_the_cache_counts(settings: Any, redis: str) -> None:
    settings.REDIS_URL = "" if redis == "none" else f"redis://127.0.0.1:{unused_port()}/0"
    operator_create(username="ops", password="right", areas=["fleet"])
    lock_out(Client())


def test_with_redis_every_replica_sees_the_lock(settings: Any) -> None:
    """Counted in Redis: a lock made through one process's cache-less view holds for
    another that shares only Redis (its Django cache is emptied here)."""
    import os

    from django.core.cache import cache

    url = os.environ.get("RBEE_REDIS_URL", "")
    if not url:
        pytest.fail("this test needs RBEE_REDIS_URL (the suite runs with Redis)")
    settings.REDIS_URL = url
    operator_create(username="ops", password="right", areas=["fleet"])
    lock_out(Client())
    cache.clear()
    assert Client().get("/api/models", **basic("ops", "right")).status_code == 429
    assert User.objects.get(username="ops").is_staff
