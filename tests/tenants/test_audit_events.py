"""Every security- and money-relevant change of tenants/ writes exactly one audit event
(gdpr/actions.py), in the change's own transaction, naming who did it; persons are
sealed (never an e-mail, username, key, token or password in the clear)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from gdpr.actions import AuditAction as A
from tenants.errors import TenantError
from tenants.models import ApiKey, Membership, Plan, Tenant
from tenants.services import (
    api_key_create,
    api_key_revoke,
    invitation_create,
    membership_add,
    membership_remove,
    membership_set_role,
    operator_create,
    operator_grant,
    operator_revoke,
    plan_set,
    tenant_create,
    tenant_set_status,
)
from tests.audit_events import (  # audit_home: the fixture
    actions,
    assert_not_in_clear,
    audit_home,  # noqa: F401
    events,
    one,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_home")]

PASSWORD = "pw-for-tests-Zq8"
OPS = "user:ops@rbee.example"
OWNER = "user:owner@acme.example"


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _json(c: Client, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    r = getattr(c, method)(url, json.dumps(body or {}), content_type="application/json")
    assert r.status_code < 300, r.content
    return r.json() if r.content else None


def _as(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def acme() -> Tenant:
    plan_set(name="pro", limits={"requests_per_day": 100})
    return tenant_create(name="acme", actor="cli:root")


@pytest.fixture
def owner(acme: Tenant) -> User:
    u = User.objects.create_user("acme-owner", "owner@acme.example", PASSWORD)
    membership_add(tenant=acme, user=u, role="owner")
    return u


@pytest.fixture
def ops() -> User:
    return operator_create(
        username="ops", email="ops@rbee.example", password=PASSWORD, areas=["tenants"]
    )


def test_tenant_create_records_who_and_what(acme: Tenant) -> None:
    ev = one(A.TENANT_CREATE)
    assert (ev["actor"], ev["tenant_id"], ev["subject"]) == ("cli:root", acme.pk, None)
    assert ev["data"] == {"name": "acme", "tier": "free", "plan": None}
    assert one(A.PLAN_SET)["data"]["limits"]["requests_per_day"] == 100


def test_keys_create_rotate_revoke_through_the_portal(acme: Tenant, owner: User) -> None:
    c = _as(owner)
    created = _json(c, "post", f"/api/tenants/{acme.pk}/keys", {"name": "alice laptop"})
    rotated = _json(c, "post", f"/api/tenants/{acme.pk}/keys/{created['id']}/rotate")
    r = c.delete(f"/api/tenants/{acme.pk}/keys/{rotated['id']}")
    assert r.status_code == 204
    create, rotate, revoke = one(A.KEY_CREATE), one(A.KEY_ROTATE), one(A.KEY_REVOKE)
    for ev in (create, rotate, revoke):
        assert (ev["actor"], ev["tenant_id"], ev["subject"]) == (OWNER, acme.pk, None)
    assert create["data"]["prefix"] == created["prefix"]
    assert rotate["data"]["prefix"] == rotated["prefix"]
    assert rotate["data"]["replaces"] == created["prefix"]
    assert revoke["data"]["prefix"] == rotated["prefix"]
    # A second revoke changes nothing and records nothing.
    api_key_revoke(api_key=ApiKey.objects.get(pk=rotated["id"]))
    assert len(events(A.KEY_REVOKE)) == 1
    assert_not_in_clear(
        created["key"], rotated["key"], "owner@acme.example", "acme-owner", "alice laptop"
    )
    stored = ApiKey.objects.get(pk=created["id"])
    assert_not_in_clear(stored.key_hash)


def test_an_operator_key_is_marked_and_its_actor_is_the_cli(acme: Tenant) -> None:
    key, plaintext = api_key_create(tenant=acme, scopes={"operator": True}, actor="cli:root")
    ev = one(A.KEY_CREATE)
    assert ev["actor"] == "cli:root" and ev["data"]["operator"] is True
    assert_not_in_clear(plaintext, key.key_hash)


def test_members_and_invitations(acme: Tenant, owner: User) -> None:
    c = _as(owner)
    inv = _json(c, "post", f"/api/tenants/{acme.pk}/invitations", {"email": "Bob@Acme.example"})
    bob = User.objects.create_user("bob-b", "bob@acme.example", PASSWORD)
    joined = _json(_as(bob), "post", "/api/invitations/accept", {"token": inv["token"]})
    mid = joined["membership"]["id"]
    _json(c, "patch", f"/api/tenants/{acme.pk}/members/{mid}", {"role": "admin"})
    assert c.delete(f"/api/tenants/{acme.pk}/members/{mid}").status_code == 204
    withdrawn = _json(c, "post", f"/api/tenants/{acme.pk}/invitations", {"email": "c@x.example"})
    assert c.delete(f"/api/tenants/{acme.pk}/invitations/{withdrawn['id']}").status_code == 204

    bob_subject = "user:bob@acme.example"
    created = [e for e in events(A.INVITATION_CREATE)]
    assert [e["subject"] for e in created] == [bob_subject, "user:c@x.example"]
    assert all(e["actor"] == OWNER and e["tenant_id"] == acme.pk for e in created)
    accept = one(A.INVITATION_ACCEPT)
    assert (accept["actor"], accept["subject"]) == (bob_subject, bob_subject)
    add = events(A.MEMBER_ADD)[-1]  # the owner's own membership came first
    assert (add["actor"], add["subject"], add["data"]["role"]) == (
        bob_subject,
        bob_subject,
        "member",
    )
    assert add["personal"] == {"username": "bob-b"}
    role = one(A.MEMBER_ROLE)
    assert (role["actor"], role["subject"], role["data"]["from"], role["data"]["to"]) == (
        OWNER, bob_subject, "member", "admin",
    )  # fmt: skip
    remove = one(A.MEMBER_REMOVE)
    assert (remove["actor"], remove["subject"], remove["tenant_id"]) == (
        OWNER, bob_subject, acme.pk,
    )  # fmt: skip
    withdraw = one(A.INVITATION_WITHDRAW)
    assert (withdraw["actor"], withdraw["subject"]) == (OWNER, "user:c@x.example")
    assert_not_in_clear(
        inv["token"], withdrawn["token"], "bob@acme.example", "bob-b", "c@x.example", PASSWORD
    )


def test_a_refused_change_records_nothing(acme: Tenant, owner: User) -> None:
    before = actions()
    only_owner = Membership.objects.get(tenant=acme, user=owner)
    with pytest.raises(TenantError):
        membership_set_role(membership=only_owner, role="member", actor="cli:root")
    with pytest.raises(TenantError):
        membership_remove(membership=only_owner, actor="cli:root")
    assert actions() == before


def test_a_rolled_back_change_leaves_no_event(acme: Tenant) -> None:
    before = actions()

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        api_key_create(tenant=acme, actor="cli:root")
        tenant_set_status(tenant=acme, status="suspended", actor="cli:root")
        invitation_create(
            tenant=acme, email="z@acme.example", role="member", invited_by=None, actor="x"
        )
        raise Undo
    assert actions() == before
    assert not ApiKey.objects.filter(tenant=acme).exists()


def test_tenant_plan_limits_and_status_by_an_operator(acme: Tenant, ops: User) -> None:
    c = _as(ops)
    _json(
        c,
        "patch",
        f"/api/tenants/{acme.pk}",
        {"plan": "pro", "overrides": {"max_concurrent": 3}, "status": "suspended"},
    )
    _json(c, "patch", f"/api/tenants/{acme.pk}", {"status": "active"})
    _json(c, "patch", f"/api/tenants/{acme.pk}", {"status": "active"})  # no change: no event
    plan, overrides = one(A.TENANT_PLAN), one(A.TENANT_OVERRIDES)
    suspend, reactivate = one(A.TENANT_SUSPEND), one(A.TENANT_REACTIVATE)
    for ev in (plan, overrides, suspend, reactivate):
        assert (ev["actor"], ev["tenant_id"]) == (OPS, acme.pk)
    assert (plan["data"]["from"], plan["data"]["to"]) == (None, "pro")
    assert overrides["data"]["set"] == {"max_concurrent": 3}
    assert (suspend["data"]["from"], suspend["data"]["to"]) == ("active", "suspended")
    assert (reactivate["data"]["from"], reactivate["data"]["to"]) == ("suspended", "active")


def test_plans_through_the_api(ops: User) -> None:
    c = _as(ops)
    p = _json(c, "post", "/api/plans", {"name": "team", "requests_per_day": 10})
    _json(c, "patch", f"/api/plans/{p['id']}", {"requests_per_day": 20})
    made, edited = events(A.PLAN_SET)
    assert (made["actor"], made["data"]["plan"], made["data"]["created"]) == (OPS, "team", True)
    assert (edited["data"]["created"], edited["data"]["limits"]["requests_per_day"]) == (False, 20)


def test_operators_create_grant_revoke() -> None:
    operator_create(
        username="carol", email="carol@rbee.example", password=PASSWORD, areas=["fleet"],
        actor="cli:root",
    )  # fmt: skip
    operator_grant(username="carol", areas=["audit"], actor="cli:root")
    operator_revoke(username="carol", areas=["fleet"], actor="cli:root")
    made, grant, revoke = one(A.OPERATOR_CREATE), one(A.OPERATOR_GRANT), one(A.OPERATOR_REVOKE)
    for ev in (made, grant, revoke):
        assert (ev["actor"], ev["subject"]) == ("cli:root", "user:carol@rbee.example")
        assert ev["personal"] == {"username": "carol"}
    assert made["data"]["areas"] == ["fleet"] and grant["data"]["areas"] == ["audit"]
    assert revoke["data"]["areas"] == ["fleet"]
    assert_not_in_clear("carol", PASSWORD)


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}", "REMOTE_ADDR": "198.51.100.23"}


def test_logins_failures_and_the_lockout(ops: User, settings: Any) -> None:
    settings.RBEE_LOGIN_MAX_FAILURES = 3
    c = Client()
    # HTTP Basic authenticates every API call: a call is not a sign-in event (the
    # append-only log would grow by one per call); failures and lockouts are.
    for _ in range(3):
        assert c.get("/api/tenants", **_basic("ops", PASSWORD)).status_code == 200
    assert events(A.LOGIN_SUCCESS) == []

    assert c.get("/api/tenants", **_basic("ops", "wrong-1")).status_code in (401, 403)
    bad = one(A.LOGIN_FAILURE)
    assert (bad["actor"], bad["subject"], bad["outcome"]) == (OPS, OPS, "denied")
    assert bad["data"]["reason"] == "bad_credentials" and bad["data"]["known_user"] is True

    # An unknown username: recorded, without the name anywhere in clear and without
    # a subject (nobody to seal it under): only the address's network is kept.
    assert c.get("/api/tenants", **_basic("mallory-probe", "x")).status_code in (401, 403)
    unknown = events(A.LOGIN_FAILURE)[-1]
    assert (unknown["actor"], unknown["subject"], unknown["personal"]) == ("anonymous", None, {})
    assert unknown["data"] == {
        "method": "basic", "known_user": False, "reason": "bad_credentials",
        "address_net": "198.51.100.0/24",
    }  # fmt: skip

    # The third failure from this address locks it: one login.lockout; then a locked
    # attempt is a failure with reason "locked".
    assert c.get("/api/tenants", **_basic("ops", "wrong-2")).status_code in (401, 403)
    lock = one(A.LOGIN_LOCKOUT)
    assert lock["data"]["locked"] == ["address"] and lock["subject"] == OPS
    assert c.get("/api/tenants", **_basic("ops", PASSWORD)).status_code == 429
    assert events(A.LOGIN_FAILURE)[-1]["data"]["reason"] == "locked"
    # Hammering the locked account adds no more events (one a minute at most).
    failures = len(events(A.LOGIN_FAILURE))
    for _ in range(5):
        assert c.get("/api/tenants", **_basic("ops", PASSWORD)).status_code == 429
    assert len(events(A.LOGIN_FAILURE)) == failures
    assert events(A.LOGIN_SUCCESS) == []
    assert_not_in_clear("mallory-probe", "198.51.100.23", "ops@rbee.example", PASSWORD, "wrong-1")


def test_the_admin_login_form_is_audited_too(ops: User) -> None:
    ok = Client().post(
        "/admin/login/?next=/admin/",
        {"username": "ops", "password": PASSWORD},
        REMOTE_ADDR="203.0.113.5",
    )
    assert ok.status_code == 302
    signed_in = one(A.LOGIN_SUCCESS)
    assert (signed_in["actor"], signed_in["subject"], signed_in["outcome"]) == (OPS, OPS, "ok")
    assert signed_in["personal"] == {"address": "203.0.113.5", "username": "ops"}
    assert signed_in["data"]["method"] == "form"
    r = Client().post(
        "/admin/login/?next=/admin/",
        {"username": "ops", "password": "nope"},
        REMOTE_ADDR="203.0.113.5",
    )
    assert r.status_code == 200  # the form again, with an error
    ev = one(A.LOGIN_FAILURE)
    assert (ev["subject"], ev["data"]["method"]) == (OPS, "form")
    assert ev["personal"]["address"] == "203.0.113.5"


def test_past_due_since_survives_in_rotate_grace(acme: Tenant) -> None:
    # Rotation records the old key's new expiry (the grace period's end).
    key, _ = api_key_create(tenant=acme, actor="cli:root")
    from tenants.services import api_key_rotate

    api_key_rotate(api_key=key, grace=timedelta(hours=1), actor="cli:root")
    key.refresh_from_db()
    assert one(A.KEY_ROTATE)["data"]["old_expires_at"] == key.expires_at.isoformat()
    assert len(events(A.KEY_CREATE)) == 1  # the rotation is one event, not two


def test_operators_edits_in_the_admin_console(acme: Tenant) -> None:
    User.objects.create_superuser("root", "root@rbee.example", PASSWORD)
    c = Client()
    c.force_login(User.objects.get(username="root"))
    form = {
        "name": "team", "description": "", "allowed_models": "[]", "requests_per_day": "5",
        "queue_weight": "1", "max_priority": "interactive", "stripe_price_id": "",
    }  # fmt: skip
    r = c.post("/admin/tenants/plan/add/", form)
    assert r.status_code == 302, r.content[:2000]
    team = Plan.objects.get(name="team")
    r = c.post(f"/admin/tenants/plan/{team.pk}/change/", {**form, "requests_per_day": "7"})
    assert r.status_code == 302
    key, plaintext = api_key_create(tenant=acme, actor="cli:root")
    r = c.post(f"/admin/tenants/apikey/{key.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302
    add, change, delete = one(A.ADMIN_ADD), one(A.ADMIN_CHANGE), one(A.ADMIN_DELETE)
    root = "user:root@rbee.example"
    assert (add["actor"], add["data"]) == (
        root,
        {"model": "tenants.plan", "object_id": str(team.pk)},
    )
    assert "Requests per day" in change["data"]["fields"]  # names, never values
    assert set(change["data"]) == {"model", "object_id", "fields"}
    assert (delete["actor"], delete["tenant_id"], delete["data"]["model"]) == (
        root, acme.pk, "tenants.apikey",
    )  # fmt: skip
    assert_not_in_clear(plaintext, "root@rbee.example")
