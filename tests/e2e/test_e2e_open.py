"""A queen started open (`rbee up --open`) answers the seeds' curl lines, which carry no key."""

from __future__ import annotations

import httpx
import pytest

from testkit.live import Deployment, Hive, Queen

pytestmark = pytest.mark.e2e


def test_open_queen_serves_requests_without_a_key(deployment: Deployment) -> None:
    deployment.rbee("tenant", "create", "default")
    queen = Queen(deployment, env={"RBEE_ANONYMOUS_TENANT": "default"})
    Hive(deployment, queen, "local", ["llama-3-70b=echo:"])
    # Verbatim from the consumer seed, apart from the port.
    r = httpx.post(
        f"{queen.url}/v1/chat/completions",
        headers={"Content-Type": "application/json"},
        content=b'{"model": "llama-3-70b", "messages": [{"role": "user", "content": "Hello!"}]}',
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello!"
    assert httpx.get(f"{queen.url}/v1/models").json()["data"][0]["id"] == "llama-3-70b"
    # A page on another site that rebinds its name to this machine gets nothing keyless.
    rebound = httpx.get(f"{queen.url}/v1/models", headers={"Host": "rebind.example:7833"})
    assert rebound.status_code == 401, rebound.text
    # A key that is given is still checked.
    bad = httpx.get(f"{queen.url}/v1/models", headers={"Authorization": "Bearer sk-rbee-x"})
    assert bad.status_code == 401


def test_open_needs_an_existing_active_tenant(deployment: Deployment) -> None:
    queen = Queen(deployment, env={"RBEE_ANONYMOUS_TENANT": "nobody"})
    r = httpx.get(f"{queen.url}/v1/models")
    assert r.status_code == 401


def test_rbee_up_open_refuses_a_public_address(deployment: Deployment) -> None:
    out = deployment.rbee("up", "--open", "--host", "0.0.0.0", check=False)
    assert out.returncode == 1
    assert "loopback" in out.stderr


def test_an_open_queen_refuses_to_listen_beyond_loopback(deployment: Deployment) -> None:
    out = deployment.rbee(
        "queen",
        "start",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        env={"RBEE_ANONYMOUS_TENANT": "default"},
        check=False,
    )
    assert out.returncode == 1
    assert "loopback" in out.stderr
