"""Each queen process keeps the callers of the keys it resolved (tenants.selectors.
caller_cached): a key revoked, a tenant suspended or its limits changed from anywhere
(here the CLI, a process of its own) takes effect with the very next request on every
queen. On PostgreSQL + Redis two queens share the deployment, the hive is connected to
the first, and both have served (and so keep) the key before each change; on the
embedded default one queen and the CLI share the SQLite file."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from testkit.live import Deployment, Hive, Queen

pytestmark = pytest.mark.e2e

MODEL = "echo-cache"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "one two three"}]}


def shared() -> bool:
    return bool(os.environ.get("RBEE_REDIS_URL") and os.environ.get("RBEE_DATABASE_URL"))


@pytest.fixture(scope="module")
def queens() -> Iterator[tuple[Deployment, list[Queen]]]:
    dep = Deployment()
    try:
        first = Queen(dep, name="queen-a")
        queens = [first, Queen(dep, name="queen-b")] if shared() else [first]
        Hive(dep, first, "cache-hive", [f"{MODEL}=echo:"])
        for q in queens:
            q.wait_for_model("cache-hive", MODEL)
        yield dep, queens
    finally:
        dep.close()


def chat(queen: Queen, key: str) -> httpx.Response:
    return httpx.post(
        f"{queen.url}/v1/chat/completions",
        json=BODY,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def served_everywhere(queens: list[Queen], key: str) -> None:
    """Every queen answers the key (and so keeps its caller); twice, so the second
    answer comes from what the queen kept."""
    for q in queens:
        for _ in range(2):
            r = chat(q, key)
            assert r.status_code == 200, (q.name, r.text)


def test_revoked_key_stops_on_every_queen(queens: tuple[Deployment, list[Queen]]) -> None:
    dep, qs = queens
    dep.rbee("tenant", "create", "revoked-co")
    key = dep.rbee("key", "create", "--tenant", "revoked-co").stdout.strip()
    other = dep.rbee("key", "create", "--tenant", "revoked-co").stdout.strip()
    served_everywhere(qs, key)
    served_everywhere(qs, other)
    dep.rbee("key", "revoke", key, "--tenant", "revoked-co")
    for q in qs:
        r = chat(q, key)
        assert r.status_code == 401, (q.name, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert "revoked" in r.json()["error"]["message"]
        assert chat(q, other).status_code == 200, q.name  # the tenant's other key still works


def test_suspended_tenant_stops_and_resumes_on_every_queen(
    queens: tuple[Deployment, list[Queen]],
) -> None:
    dep, qs = queens
    dep.rbee("tenant", "create", "suspended-co")
    key = dep.rbee("key", "create", "--tenant", "suspended-co").stdout.strip()
    served_everywhere(qs, key)
    dep.rbee("tenant", "suspend", "suspended-co")
    for q in qs:
        r = chat(q, key)
        assert r.status_code == 401, (q.name, r.text)
        assert "suspended" in r.json()["error"]["message"] or "deactivated" in r.text
    dep.rbee("tenant", "resume", "suspended-co")
    for q in qs:
        assert chat(q, key).status_code == 200, q.name


def test_changed_limits_apply_on_every_queen(queens: tuple[Deployment, list[Queen]]) -> None:
    dep, qs = queens
    dep.rbee("tenant", "create", "limited-co")
    key = dep.rbee("key", "create", "--tenant", "limited-co").stdout.strip()
    served_everywhere(qs, key)
    dep.rbee("tenant", "limit", "limited-co", "requests_per_day=0")
    for q in qs:
        r = chat(q, key)
        assert r.status_code == 429, (q.name, r.text)
        assert r.json()["error"]["code"] == "insufficient_quota"
    dep.rbee("tenant", "limit", "limited-co", "requests_per_day=none")
    for q in qs:
        assert chat(q, key).status_code == 200, q.name
