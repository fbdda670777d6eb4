"""Fixtures shared by the suite.

Unit tests use pytest-django's database (PostgreSQL when RBEE_DATABASE_URL is
set, as in CI). End-to-end tests start real processes through testkit/live.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from testkit.live import Deployment, Hive, Queen

CHAT_MODEL = "smollm2-135m-instruct"


@dataclass
class Stack:
    dep: Deployment
    queen: Queen
    hive: Hive
    api_key: str

    @property
    def base_url(self) -> str:
        return f"{self.queen.url}/v1"

    def client(self, **kw: object):  # type: ignore[no-untyped-def]
        import openai

        kw.setdefault("api_key", self.api_key)
        return openai.OpenAI(base_url=self.base_url, max_retries=0, **kw)


def _stack(embedded: bool | None) -> Iterator[Stack]:
    dep = Deployment(embedded=embedded)
    try:
        # A small body limit so the 413 test need not send megabytes.
        queen = Queen(dep, env={"RBEE_MAX_BODY_BYTES": "262144"})
        hive = Hive(dep, queen, "hive-a", [CHAT_MODEL])
        dep.rbee("tenant", "create", "acme")
        api_key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        yield Stack(dep=dep, queen=queen, hive=hive, api_key=api_key)
    finally:
        dep.close()


@pytest.fixture(autouse=True, scope="session")
def _short_lived_db_connections() -> None:
    """The queen keeps connections open in its executor threads (rbee/db.py); in the
    test process that would stop pytest-django from dropping its test database."""
    from django.db import connections

    for conn in connections.all():
        conn.settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True, scope="session")
def _audit_tables_flushable() -> None:
    """Transactional tests end with Django's flush, which the audit log's append-only
    triggers would refuse (testkit/auditdb.py lets it through, as a superuser)."""
    from testkit.auditdb import allow_flush

    allow_flush()


@pytest.fixture(autouse=True)
def _own_login_counters(settings: Any) -> None:
    """Failed sign-ins lock the client address (tenants/auth.py); every test client is
    127.0.0.1, so each test counts its own."""
    settings.RBEE_LOGIN_PREFIX = f"rbee-test-login:{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """A queen and a hive serving SmolLM2, on the configured database and channel layer."""
    yield from _stack(embedded=None)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    dep = Deployment()
    try:
        yield dep
    finally:
        dep.close()
