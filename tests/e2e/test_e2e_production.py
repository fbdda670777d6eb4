"""A queen started with RBEE_PRODUCTION=1: what it refuses to start without, what it
shows to whom, and which proxy headers it believes."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from testkit.live import Deployment, Queen, free_port

pytestmark = pytest.mark.e2e

TOKEN = "metrics-" + "m" * 32
PROD = {
    "RBEE_PRODUCTION": "1",
    "RBEE_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "RBEE_CSRF_TRUSTED_ORIGINS": "https://rbee.example.com",
    "RBEE_METRICS_TOKEN": TOKEN,
}


def test_a_production_queen_refuses_to_start_without_hosts_and_origins() -> None:
    dep = Deployment()
    try:
        port = free_port()
        proc, log = dep.spawn(
            ["queen", "start", "--host", "127.0.0.1", "--port", str(port)],
            "queen-unconfigured",
            {"RBEE_PRODUCTION": "1"},
        )
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("a production queen without RBEE_ALLOWED_HOSTS started")
        assert code != 0
        text = log.read_text()
        assert "RBEE_PRODUCTION=1 needs RBEE_ALLOWED_HOSTS and RBEE_CSRF_TRUSTED_ORIGINS" in text
    finally:
        dep.close()


def test_a_production_queen_keeps_its_internals_for_the_token_and_staff() -> None:
    dep = Deployment()
    try:
        queen = Queen(dep, env={**PROD, "RBEE_TRUSTED_PROXIES": "127.0.0.1"})
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        url = queen.url
        # The load balancer's probe: open, minimal, even from this machine.
        bare = httpx.get(f"{url}/healthz")
        assert bare.status_code == 200 and bare.json() == {"status": "ok"}
        # An API key is not an operator's credential in production.
        keyed = httpx.get(f"{url}/healthz", headers={"Authorization": f"Bearer {key}"})
        assert keyed.json() == {"status": "ok"}
        full = httpx.get(f"{url}/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert full.status_code == 200 and full.json()["hives"] == []
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {key}"}):
            denied = httpx.get(f"{url}/metrics", headers=headers)
            assert denied.status_code == 401, headers
            assert denied.json()["error"]["code"] == "unauthorized"
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert metrics.status_code == 200 and "rbee_scheduler_decisions" in metrics.text
        # Behind the trusted proxy (this machine) that says the client used https: HSTS,
        # and cookies only for https.
        page = httpx.get(f"{url}/admin/login/", headers={"X-Forwarded-Proto": "https"})
        assert page.status_code == 200
        assert page.headers["strict-transport-security"].startswith("max-age=31536000")
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("csrftoken=") and "Secure" in cookie and "HttpOnly" in cookie
        api = httpx.get(
            f"{url}/v1/models",
            headers={"Authorization": f"Bearer {key}", "X-Forwarded-Proto": "https"},
        )
        assert api.status_code == 200
        assert api.headers["strict-transport-security"].startswith("max-age=31536000")
        plain = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert "strict-transport-security" not in plain.headers  # HSTS only over https
        # A host name it was not given is refused.
        other = httpx.get(f"{url}/admin/login/", headers={"Host": "evil.example"})
        assert other.status_code == 400
    finally:
        dep.close()


def test_proxy_headers_count_only_from_the_trusted_proxies() -> None:
    dep = Deployment()
    try:
        queen = Queen(dep, env={**PROD, "RBEE_TRUSTED_PROXIES": "10.9.8.7"})
        page = httpx.get(f"{queen.url}/admin/login/", headers={"X-Forwarded-Proto": "https"})
        assert page.status_code == 200
        # The client is not the proxy: its claim of https is dropped, so no HSTS.
        assert "strict-transport-security" not in page.headers
    finally:
        dep.close()
