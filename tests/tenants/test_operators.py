"""Operators have permissions per area, not one `is_staff` flag (tenants/permissions.py):
fleet, scheduler, tenants (and billing), audit. Each management endpoint checks its
area's permission; a superuser holds them all; `rbee operator` grants and revokes them."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from click.testing import CliRunner
from django.contrib.auth.models import User
from django.test import Client

from rbee.cli import main
from tenants.models import Tenant
from tenants.permissions import may_operate
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests"


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def basic(username: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def rbee(*args: str, stdin: str = "") -> Any:
    result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)
    return result


def create(name: str, *perms: str, superuser: bool = False) -> None:
    args = ["operator", "create", name, "--password-stdin"]
    for p in perms:
        args += ["--perm", p]
    if superuser:
        args.append("--superuser")
    r = rbee(*args, stdin=PASSWORD + "\n")
    assert r.exit_code == 0, r.output


@pytest.fixture
def acme() -> Tenant:
    return tenant_create(name="acme")


def requests_of(area: str, tenant: Tenant) -> list[tuple[str, str, dict[str, Any] | None, int]]:
    """(method, url, body, status with the permission) of the endpoints of one area."""
    T = f"/api/tenants/{tenant.pk}"
    return {
        "fleet": [
            ("get", "/api/models", None, 200),
            ("get", "/api/workers", None, 200),
            # valid for the serializer, refused for the unknown hive: the check passed
            ("post", "/api/models", {"spec": "tiny-sd", "hive": "nope"}, 400),
            ("delete", "/api/models/tiny-sd?hive=nope", None, 404),
            ("post", "/api/workers/999999/stop", None, 404),
            ("post", "/api/downloads", {"source": "/etc", "hive": "nope"}, 400),
            ("get", "/api/downloads/999999", None, 404),
        ],
        "scheduler": [
            ("get", "/api/scheduler/script", None, 200),
            ("post", "/api/scheduler/script", {"source": "fn route_task(t, w) { () }"}, 201),
        ],
        "tenants": [
            ("get", "/api/plans", None, 200),
            ("post", "/api/plans", {"name": "team"}, 201),
            ("get", T, None, 200),
            ("patch", T, {"status": "active"}, 200),
            ("get", f"{T}/keys", None, 200),
            ("post", f"{T}/keys", {"name": "acting as acme"}, 201),
        ],
    }[area]


def call(c: Client, method: str, url: str, body: dict[str, Any] | None, who: str) -> Any:
    if method in ("get", "delete"):
        return getattr(c, method)(url, **basic(who))
    return getattr(c, method)(
        url, json.dumps(body or {}), content_type="application/json", **basic(who)
    )


@pytest.mark.parametrize("area", ["fleet", "scheduler", "tenants"])
def test_each_area_needs_its_own_permission(acme: Tenant, area: str) -> None:
    """A staff user without the area's permission gets 403 (404 for a tenant, which it
    cannot see); one with it gets through; a superuser always does."""
    create("bare-staff", *[a for a in ("fleet", "scheduler", "tenants", "audit") if a != area])
    create("allowed", area)
    create("root", superuser=True)
    assert User.objects.get(username="bare-staff").is_staff
    c = Client()
    for method, url, body, ok in requests_of(area, acme):
        denied = call(c, method, url, body, "bare-staff")
        expected = 404 if url.startswith("/api/tenants/") else 403
        assert denied.status_code == expected, (method, url, denied.content)
        assert denied.json()["error"]["code"] in ("forbidden", "not_found")
        for who in ("allowed", "root"):
            r = call(c, method, url, body, who)
            assert r.status_code == ok, (who, method, url, r.content)
            if method == "post" and ok == 201 and url.endswith("/plans"):
                # made once per test; the second maker hears a clear 400
                body = {"name": "team2"}


def test_staff_without_the_tenants_permission_see_no_tenant(acme: Tenant) -> None:
    create("fleet-only", "fleet")
    create("tenant-ops", "tenants")
    c = Client()
    assert c.get("/api/tenants", **basic("fleet-only")).json() == {"data": []}
    names = [t["name"] for t in c.get("/api/tenants", **basic("tenant-ops")).json()["data"]]
    assert names == ["acme"]


def test_is_staff_alone_grants_nothing(acme: Tenant) -> None:
    User.objects.create_user("old-style", "o@example.com", PASSWORD, is_staff=True)
    c = Client()
    for url in ("/api/models", "/api/workers", "/api/scheduler/script", "/api/plans"):
        assert c.get(url, **basic("old-style")).status_code == 403, url
    assert c.get(f"/api/tenants/{acme.pk}", **basic("old-style")).status_code == 404


def test_grant_and_revoke_from_the_cli(acme: Tenant) -> None:
    create("ops", "scheduler")
    c = Client()
    assert c.get("/api/models", **basic("ops")).status_code == 403
    r = rbee("operator", "grant", "ops", "--perm", "fleet", "--perm", "audit")
    assert r.exit_code == 0, r.output
    assert c.get("/api/models", **basic("ops")).status_code == 200
    user = User.objects.get(username="ops")
    assert may_operate(user, "audit")
    listed = rbee("operator", "list").output
    assert "ops" in listed and "fleet" in listed and "scheduler" in listed
    r = rbee("operator", "revoke", "ops", "--perm", "fleet")
    assert r.exit_code == 0, r.output
    assert c.get("/api/models", **basic("ops")).status_code == 403
    assert c.get("/api/scheduler/script", **basic("ops")).status_code == 200


def test_the_cli_refuses_what_it_cannot_do() -> None:
    assert rbee("operator", "create", "x", "--password-stdin", stdin="pw\n").exit_code == 1
    assert rbee("operator", "create", "x", "--perm", "root", "--password-stdin").exit_code == 2
    assert rbee("operator", "grant", "nobody", "--perm", "fleet").exit_code == 1
    create("dup", "fleet")
    r = rbee("operator", "create", "dup", "--perm", "fleet", "--password-stdin", stdin="pw\n")
    assert r.exit_code == 1 and "already exists" in r.output


def test_a_superuser_holds_every_area() -> None:
    create("root", superuser=True)
    user = User.objects.get(username="root")
    assert all(may_operate(user, a) for a in ("fleet", "scheduler", "tenants", "audit"))
    User.objects.filter(pk=user.pk).update(is_active=False)
    user.refresh_from_db()
    assert not may_operate(user, "fleet")


def test_a_view_that_names_no_permission_is_for_superusers_only() -> None:
    """REST_FRAMEWORK's default: a management view added without its area's permission
    does not fall back to `is_staff`."""
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory, force_authenticate
    from rest_framework.views import APIView

    class Forgotten(APIView):
        def get(self, request: Any) -> Response:
            return Response({"ok": True})

    create("every-area", "fleet", "scheduler", "tenants", "audit")
    create("root", superuser=True)
    for name, status in (("every-area", 403), ("root", 200)):
        request = APIRequestFactory().get("/api/forgotten")
        force_authenticate(request, user=User.objects.get(username=name))
        assert Forgotten.as_view()(request).status_code == status, name


def test_the_portal_cannot_rotate_an_operator_key(acme: Tenant) -> None:
    """Rotation copies a key's scopes; a tenant admin rotating an operator key on its
    tenant would mint a new operator key, which only the queen's CLI may do."""
    from tenants.models import Membership
    from tenants.services import api_key_create

    owner = User.objects.create_user("owner", password=PASSWORD)
    Membership.objects.create(user=owner, tenant=acme, role=Membership.Role.OWNER)
    op_key, _ = api_key_create(tenant=acme, scopes={"operator": True})
    plain_key, _ = api_key_create(tenant=acme)
    c = Client()
    c.force_login(owner)
    url = f"/api/tenants/{acme.pk}/keys/{{}}/rotate"
    refused = c.post(url.format(op_key.pk), {}, content_type="application/json")
    assert refused.status_code == 403, refused.content
    assert "rbee key rotate" in json.loads(refused.content)["error"]["message"]
    assert acme.api_keys.filter(scopes__operator=True).count() == 1
    rotated = c.post(url.format(plain_key.pk), {}, content_type="application/json")
    assert rotated.status_code == 201, rotated.content


def test_the_audit_permission_reads_usage_and_invoices_and_changes_nothing(acme: Tenant) -> None:
    """Auditors read every tenant's usage and invoices (as do tenants operators); they
    cannot see keys, change a tenant or act as it. Other operators read nothing."""
    create("auditor", "audit")
    create("tenant-ops", "tenants")
    create("fleet-only", "fleet")
    c = Client()
    T = f"/api/tenants/{acme.pk}"
    reads = [f"{T}/usage", f"{T}/usage.csv", f"{T}/invoices"]
    for who in ("auditor", "tenant-ops"):
        for url in reads:
            assert c.get(url, **basic(who)).status_code == 200, (who, url)
        names = [t["name"] for t in c.get("/api/tenants", **basic(who)).json()["data"]]
        assert names == ["acme"], who
    for url in reads:
        assert c.get(url, **basic("fleet-only")).status_code == 404, url
    for method, url, body in (
        ("get", T, None),
        ("patch", T, {"status": "suspended"}),
        ("get", f"{T}/keys", None),
        ("post", f"{T}/keys", {"name": "acting as acme"}),
        ("get", "/api/plans", None),
    ):
        r = call(c, method, url, body, "auditor")
        assert r.status_code in (403, 404), (method, url, r.content)
    acme.refresh_from_db()
    assert acme.status == "active" and not acme.api_keys.exists()
