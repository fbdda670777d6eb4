"""The tenant portal's management API (tenants/api.py).

Two tenants, each with an owner, an admin, a member and a billing user. The hard rule
first: with another tenant's ids, or with ids that do not exist, every endpoint answers
the same 404, byte for byte; then roles, keys, members, invitations, usage, invoices,
plans and the error format.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connections
from django.db.models import Max
from django.test import AsyncClient, Client
from django.utils import timezone

from billing.models import Invoice, UsageEvent
from billing.services import Usage, plan_get_or_create_defaults, usage_record
from tenants.models import ApiKey, Invitation, Membership, Plan, Tenant
from tenants.selectors import KeyRejected, caller_from_key
from tenants.services import (
    api_key_create,
    invitation_create,
    membership_add,
    operator_create,
    tenant_create,
)

pytestmark = [pytest.mark.django_db]

PASSWORD = "pw-for-tests"
ROLES = ("owner", "admin", "member", "billing")
MANAGERS = ("owner", "admin")
INVOICE_READERS = ("owner", "admin", "billing")
NOT_FOUND = {"error": {"message": "not found", "code": "not_found"}}


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Side:
    tenant: Tenant
    users: dict[str, User]
    memberships: dict[str, Membership]
    extra: Membership  # one more plain member, to be changed or removed
    key: ApiKey
    plaintext: str
    invitation: Invitation
    invoice: Invoice


@dataclass
class World:
    a: Side
    b: Side
    staff: User
    outsider: User
    newcomer: User  # a user in no tenant, for "add a member"


def _side(name: str) -> Side:
    t = tenant_create(name=name, plan="pro")
    users: dict[str, User] = {}
    memberships: dict[str, Membership] = {}
    for role in ROLES:
        u = User.objects.create_user(f"{name}-{role}", f"{role}@{name}.example", PASSWORD)
        users[role] = u
        memberships[role] = membership_add(tenant=t, user=u, role=role)
    extra_user = User.objects.create_user(f"{name}-extra", f"extra@{name}.example", PASSWORD)
    extra = membership_add(tenant=t, user=extra_user, role="member")
    key, plaintext = api_key_create(tenant=t, name="ci")
    invitation, _ = invitation_create(
        tenant=t, email=f"new@{name}.example", role="member", invited_by=users["owner"]
    )
    today = timezone.now().date()
    invoice = Invoice.objects.create(
        tenant=t,
        period_start=today.replace(day=1),
        period_end=today,
        lines=[{"model": f"{name}-model", "unit": "prompt_tokens", "quantity": "10"}],
        total=Decimal("1.25"),
    )
    for i in range(2):
        usage_record(
            request_id=f"{name}-req-{i}",
            tenant_id=t.pk,
            api_key_id=key.pk,
            model=f"{name}-model",
            modality="chat",
            usage=Usage(prompt_tokens=10, completion_tokens=5),
        )
    usage_record(
        request_id=f"{name}-req-shared",
        tenant_id=t.pk,
        api_key_id=None,
        model="shared-model",
        modality="embedding",
        usage=Usage(prompt_tokens=7),
    )
    return Side(t, users, memberships, extra, key, plaintext, invitation, invoice)


@pytest.fixture
def world() -> World:
    plan_get_or_create_defaults()
    return World(
        a=_side("acme"),
        b=_side("bolt"),
        staff=operator_create(
            username="ops", email="ops@rbee.example", password=PASSWORD, areas=["tenants"]
        ),
        outsider=User.objects.create_user("eve", "eve@else.example", PASSWORD),
        newcomer=User.objects.create_user("newbie", "newbie@else.example", PASSWORD),
    )


def as_(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def call(c: Client, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    if method == "get":
        return c.get(url)
    return getattr(c, method)(url, json.dumps(body or {}), content_type="application/json")


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def endpoints(t: int, k: int, m: int, i: int, v: int) -> list[tuple[str, str, Any]]:
    """Every tenant-scoped endpoint, with a body that would be valid."""
    T = f"/api/tenants/{t}"
    return [
        ("get", T, None),
        ("patch", T, {"status": "suspended"}),
        ("get", f"{T}/keys", None),
        ("post", f"{T}/keys", {"name": "x"}),
        ("get", f"{T}/keys/{k}", None),
        ("delete", f"{T}/keys/{k}", None),
        ("post", f"{T}/keys/{k}/rotate", {"grace_seconds": 0}),
        ("get", f"{T}/members", None),
        ("post", f"{T}/members", {"email": "newbie@else.example", "role": "member"}),
        ("patch", f"{T}/members/{m}", {"role": "billing"}),
        ("delete", f"{T}/members/{m}", None),
        ("get", f"{T}/invitations", None),
        ("post", f"{T}/invitations", {"email": "z@z.example", "role": "member"}),
        ("delete", f"{T}/invitations/{i}", None),
        ("get", f"{T}/usage", None),
        ("get", f"{T}/usage.csv", None),
        ("get", f"{T}/invoices", None),
        ("get", f"{T}/invoices/{v}", None),
    ]


N_ENDPOINTS = len(endpoints(0, 0, 0, 0, 0))
WITH_OBJECT_ID = [
    n
    for n, (_, url, _) in enumerate(endpoints(1, 22, 33, 44, 55))
    if {"22", "33", "44", "55"} & set(url.split("/"))
]


def _ids(side: Side) -> dict[str, int]:
    return {
        "k": side.key.pk,
        "m": side.extra.pk,
        "i": side.invitation.pk,
        "v": side.invoice.pk,
    }


def _missing_id() -> int:
    """An id no row of any of these tables has."""
    top = 0
    for model in (Tenant, ApiKey, Membership, Invitation, Invoice):
        top = max(top, model.objects.aggregate(m=Max("pk"))["m"] or 0)
    return top + 1000


def _assert_not_found(r: Any, what: str) -> None:
    assert r.status_code == 404, (what, r.status_code, r.content)
    assert r.json() == NOT_FOUND, (what, r.content)
    assert r["Content-Type"] == "application/json", what


def _bolt_untouched(w: World) -> None:
    b = w.b
    b.key.refresh_from_db()
    assert b.key.revoked_at is None and b.key.replaced_by_id is None
    assert b.key.expires_at is None
    assert caller_from_key(b.plaintext).tenant_id == b.tenant.pk
    assert ApiKey.objects.filter(tenant=b.tenant).count() == 1
    roles = dict(Membership.objects.filter(tenant=b.tenant).values_list("pk", "role"))
    assert roles == {m.pk: m.role for m in [*b.memberships.values(), b.extra]}
    assert Invitation.objects.filter(tenant=b.tenant).count() == 1
    b.tenant.refresh_from_db()
    assert b.tenant.status == Tenant.Status.ACTIVE


# Isolation --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(N_ENDPOINTS))
def test_another_tenants_ids_answer_the_same_404_as_ids_that_do_not_exist(
    world: World, n: int
) -> None:
    w = world
    missing = _missing_id()
    bolt = _ids(w.b)
    cases = {
        "bolt's tenant and objects": endpoints(w.b.tenant.pk, **bolt)[n],
        "a tenant that does not exist": endpoints(missing, **bolt)[n],
        "nothing exists": endpoints(missing, missing, missing, missing, missing)[n],
        "an id past any integer column": endpoints(2**64, 2**64, 2**64, 2**64, 2**64)[n],
    }
    bodies = set()
    for user in [*w.a.users.values(), w.outsider]:
        c = as_(user)
        for what, (method, url, body) in cases.items():
            r = call(c, method, url, body)
            _assert_not_found(r, f"{user.username} {method} {url}: {what}")
            bodies.add(r.content)
    assert len(bodies) == 1
    _bolt_untouched(w)


@pytest.mark.parametrize("n", WITH_OBJECT_ID)
def test_my_tenant_with_another_tenants_object_ids_answers_404(world: World, n: int) -> None:
    w = world
    missing = _missing_id()
    bolt = _ids(w.b)
    cases = {
        "bolt's object under acme": endpoints(w.a.tenant.pk, **bolt)[n],
        "no such object under acme": endpoints(w.a.tenant.pk, missing, missing, missing, missing)[
            n
        ],
    }
    # Owners pass every role check (staff too, and staff see both tenants): the only
    # thing left to answer is whether the object is this tenant's.
    for user in (w.a.users["owner"], w.staff):
        c = as_(user)
        for what, (method, url, body) in cases.items():
            _assert_not_found(call(c, method, url, body), f"{user.username} {url}: {what}")
    _bolt_untouched(w)


def test_a_403_says_nothing_about_other_tenants_objects(world: World) -> None:
    """A member lacking the role gets the same 403 for their tenant's key, another
    tenant's key and a key that does not exist; for another tenant, 404."""
    w = world
    c = as_(w.a.users["member"])
    T = f"/api/tenants/{w.a.tenant.pk}"
    answers = {
        call(c, "delete", f"{T}/keys/{key_id}").content
        for key_id in (w.a.key.pk, w.b.key.pk, _missing_id())
    }
    assert len(answers) == 1
    r = call(c, "delete", f"{T}/keys/{w.b.key.pk}")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    _assert_not_found(
        call(c, "delete", f"/api/tenants/{w.b.tenant.pk}/keys/{w.b.key.pk}"), "bolt's key"
    )
    _bolt_untouched(w)


def test_staff_get_the_same_404_for_what_does_not_exist(world: World) -> None:
    c = as_(world.staff)
    missing = _missing_id()
    for method, url, body in endpoints(missing, **_ids(world.a)):
        _assert_not_found(call(c, method, url, body), url)
    _assert_not_found(c.get(f"/api/plans/{missing}"), "plan")
    _assert_not_found(call(c, "patch", f"/api/plans/{missing}", {"tokens_per_day": 5}), "plan")


def test_tenant_lists_show_only_my_tenants(world: World) -> None:
    w = world
    mine = as_(w.a.users["billing"]).get("/api/tenants").json()["data"]
    assert [(t["name"], t["role"]) for t in mine] == [("acme", "billing")]
    assert as_(w.outsider).get("/api/tenants").json() == {"data": []}
    membership_add(tenant=w.b.tenant, user=w.a.users["admin"], role="member")
    both = as_(w.a.users["admin"]).get("/api/tenants").json()["data"]
    assert [(t["name"], t["role"]) for t in both] == [("acme", "admin"), ("bolt", "member")]
    everything = as_(w.staff).get("/api/tenants").json()["data"]
    assert [(t["name"], t["role"]) for t in everything] == [("acme", None), ("bolt", None)]


# Roles ------------------------------------------------------------------------------------

# Which roles may call each endpoint (in endpoints()' order); staff may call them all.
ALLOWED: list[tuple[tuple[str, ...], int]] = [
    (ROLES, 200),  # GET tenant
    ((), 200),  # PATCH tenant: staff only
    (ROLES, 200),  # GET keys
    (MANAGERS, 201),  # POST keys
    (ROLES, 200),  # GET key
    (MANAGERS, 204),  # DELETE key
    (MANAGERS, 201),  # rotate
    (ROLES, 200),  # GET members
    (MANAGERS, 201),  # POST members
    (MANAGERS, 200),  # PATCH member
    (MANAGERS, 204),  # DELETE member
    (MANAGERS, 200),  # GET invitations
    (MANAGERS, 201),  # POST invitations
    (MANAGERS, 204),  # DELETE invitation
    (ROLES, 200),  # usage
    (ROLES, 200),  # usage.csv
    (INVOICE_READERS, 200),  # invoices
    (INVOICE_READERS, 200),  # invoice
]
assert len(ALLOWED) == N_ENDPOINTS


@pytest.mark.parametrize("who", [*ROLES, "staff"])
@pytest.mark.parametrize("n", range(N_ENDPOINTS))
def test_roles(world: World, n: int, who: str) -> None:
    w = world
    user = w.staff if who == "staff" else w.a.users[who]
    method, url, body = endpoints(w.a.tenant.pk, **_ids(w.a))[n]
    if n == 1:
        body = {"status": "active"}
    r = call(as_(user), method, url, body)
    roles, ok = ALLOWED[n]
    if who == "staff" or who in roles:
        assert r.status_code == ok, (who, method, url, r.content)
    else:
        assert r.status_code == 403, (who, method, url, r.content)
        assert r.json()["error"]["code"] == "forbidden"
    _bolt_untouched(w)


def test_the_tenant_shows_its_plan_and_effective_limits(world: World) -> None:
    w = world
    Tenant.objects.filter(pk=w.a.tenant.pk).update(overrides={"tokens_per_day": 5})
    got = as_(w.a.users["member"]).get(f"/api/tenants/{w.a.tenant.pk}").json()
    pro = Plan.objects.get(name="pro")
    assert got["name"] == "acme" and got["plan"] == "pro" and got["status"] == "active"
    assert got["role"] == "member"
    assert got["limits"] == {
        **{f: getattr(pro, f) for f in Plan.LIMIT_FIELDS},
        "tokens_per_day": 5,
    }


def test_staff_change_a_tenants_plan_status_and_limits(world: World) -> None:
    w = world
    c = as_(w.staff)
    url = f"/api/tenants/{w.a.tenant.pk}"
    r = call(c, "patch", url, {"plan": "free", "overrides": {"requests_per_day": None}})
    assert r.status_code == 200, r.content
    got = r.json()
    free = Plan.objects.get(name="free")
    assert got["plan"] == "free" and got["limits"]["requests_per_day"] is None
    assert got["limits"]["tokens_per_day"] == free.tokens_per_day
    assert caller_from_key(w.a.plaintext).tier == "free"

    assert call(c, "patch", url, {"status": "suspended"}).json()["status"] == "suspended"
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(w.a.plaintext)
    assert exc.value.reason == "suspended"

    for bad in (
        {"plan": "no-such-plan"},
        {"status": "deleted"},
        {"overrides": {"bogus_per_day": 1}},
        {"overrides": {"tokens_per_day": -1}},
        {"plan": "pro", "overrides": {"bogus_per_day": 1}},  # all or nothing
    ):
        r = call(c, "patch", url, bad)
        assert r.status_code == 400, (bad, r.content)
        assert set(r.json()["error"]) == {"message", "code"}
    w.a.tenant.refresh_from_db()
    assert w.a.tenant.plan == free and w.a.tenant.status == "suspended"


# Keys -------------------------------------------------------------------------------------


def test_a_key_made_through_the_api_works_once_shown(world: World) -> None:
    w = world
    c = as_(w.a.users["admin"])
    url = f"/api/tenants/{w.a.tenant.pk}/keys"
    expires = (timezone.now() + timedelta(days=30)).isoformat()
    r = call(
        c,
        "post",
        url,
        {
            "name": "prod",
            "scopes": {"endpoints": ["chat"], "models": ["m1"]},
            "expires_at": expires,
        },
    )
    assert r.status_code == 201, r.content
    made = r.json()
    caller = caller_from_key(made["key"])
    assert (caller.tenant_id, caller.api_key_id) == (w.a.tenant.pk, made["id"])
    assert (caller.scope_endpoints, caller.scope_models) == (("chat",), ("m1",))
    assert made["state"] == "active" and made["name"] == "prod"

    listed = as_(w.a.users["member"]).get(url)
    assert listed.status_code == 200
    rows = listed.json()["data"]
    assert [k["id"] for k in rows] == [w.a.key.pk, made["id"]]
    for row in rows:
        assert "key" not in row and "key_hash" not in row
    for key in ApiKey.objects.all():
        assert key.key_hash not in listed.content.decode()
    assert made["key"] not in listed.content.decode()


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": {"endpoints": ["nope"]}},
        {"scopes": {"tenants": ["bolt"]}},
        {"scopes": {"models": "m1"}},
        {"expires_at": "2001-01-01T00:00:00Z"},
        {"name": "x" * 101},
    ],
)
def test_a_bad_key_request_is_refused(world: World, body: dict[str, Any]) -> None:
    r = call(as_(world.a.users["owner"]), "post", f"/api/tenants/{world.a.tenant.pk}/keys", body)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "invalid_request"
    assert ApiKey.objects.filter(tenant=world.a.tenant).count() == 1


def test_a_revoked_key_stops_working(world: World) -> None:
    w = world
    c = as_(w.a.users["owner"])
    url = f"/api/tenants/{w.a.tenant.pk}/keys/{w.a.key.pk}"
    assert call(c, "delete", url).status_code == 204
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(w.a.plaintext)
    assert exc.value.reason == "revoked"
    assert c.get(url).json()["state"] == "revoked"
    assert call(c, "delete", url).status_code == 204  # again: still revoked
    r = call(c, "post", f"{url}/rotate", {"grace_seconds": 60})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"


def test_a_rotated_key_works_until_its_grace_ends(world: World) -> None:
    w = world
    c = as_(w.a.users["owner"])
    url = f"/api/tenants/{w.a.tenant.pk}/keys/{w.a.key.pk}"
    before = timezone.now()
    r = call(c, "post", f"{url}/rotate", {"grace_seconds": 3600})
    assert r.status_code == 201, r.content
    new = r.json()
    assert new["replaces"]["id"] == w.a.key.pk and new["replaces"]["replaced_by"] == new["id"]
    assert caller_from_key(new["key"]).api_key_id == new["id"]
    assert caller_from_key(w.a.plaintext).api_key_id == w.a.key.pk  # still in its grace
    old = ApiKey.objects.get(pk=w.a.key.pk)
    assert old.expires_at is not None
    assert before + timedelta(seconds=3590) < old.expires_at < timezone.now() + timedelta(hours=1)

    # The grace period ends.
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(w.a.plaintext)
    assert exc.value.reason == "expired"
    assert caller_from_key(new["key"]).api_key_id == new["id"]
    assert c.get(url).json()["state"] == "expired"

    # Without grace the old key stops at once.
    r = call(c, "post", f"/api/tenants/{w.a.tenant.pk}/keys/{new['id']}/rotate", {})
    assert r.status_code == 201
    newer = r.json()
    assert (
        call(
            c,
            "post",
            f"/api/tenants/{w.a.tenant.pk}/keys/{newer['id']}/rotate",
            {"grace_seconds": 0},
        ).status_code
        == 201
    )
    with pytest.raises(KeyRejected):
        caller_from_key(newer["key"])
    bad = call(c, "post", f"{url}/rotate", {"grace_seconds": -1})
    assert bad.status_code == 400
    # A key is rotated once: its successor is the one to rotate next.
    twice = call(c, "post", f"{url}/rotate", {"grace_seconds": 60})
    assert twice.status_code == 400 and twice.json()["error"]["code"] == "already_rotated"
    assert ApiKey.objects.filter(replaced_by__isnull=True, tenant=w.a.tenant).count() == 1


# Members ----------------------------------------------------------------------------------


def test_owners_and_admins_add_and_change_members(world: World) -> None:
    w = world
    c = as_(w.a.users["admin"])
    url = f"/api/tenants/{w.a.tenant.pk}/members"
    # Adding a member is inviting them: they join by accepting, signed in as that email.
    r = call(c, "post", url, {"email": "newbie@else.example", "role": "billing"})
    assert r.status_code == 201, r.content
    assert (r.json()["email"], r.json()["role"], r.json()["state"]) == (
        "newbie@else.example",
        "billing",
        "pending",
    )
    assert not Membership.objects.filter(tenant=w.a.tenant, user=w.newcomer).exists()
    accepted = call(
        as_(w.newcomer), "post", "/api/invitations/accept", {"token": r.json()["token"]}
    )
    assert accepted.status_code == 201, accepted.content
    assert call(c, "post", url, {"username": "newbie"}).status_code == 400
    assert call(c, "post", url, {"username": "newbie", "email": "x@y.example"}).status_code == 400
    assert call(c, "post", url, {"email": "eve@else.example", "role": "boss"}).status_code == 400
    # Only an owner grants the owner role.
    assert call(c, "post", url, {"email": "eve@else.example", "role": "owner"}).status_code == 403
    assert as_(w.newcomer).get(f"/api/tenants/{w.a.tenant.pk}").status_code == 200
    members = as_(w.a.users["member"]).get(url).json()["data"]
    assert {m["username"] for m in members} == {
        "acme-owner",
        "acme-admin",
        "acme-member",
        "acme-billing",
        "acme-extra",
        "newbie",
    }
    extra = f"{url}/{w.a.extra.pk}"
    assert call(c, "patch", extra, {"role": "admin"}).json()["role"] == "admin"
    assert call(c, "patch", extra, {"role": "owner"}).status_code == 403
    owner = f"{url}/{w.a.memberships['owner'].pk}"
    assert call(c, "patch", owner, {"role": "member"}).status_code == 403
    assert call(c, "delete", owner).status_code == 403
    assert call(c, "delete", extra).status_code == 204
    assert not Membership.objects.filter(pk=w.a.extra.pk).exists()


def test_the_last_owner_cannot_be_removed_or_demoted(world: World) -> None:
    w = world
    c = as_(w.a.users["owner"])
    url = f"/api/tenants/{w.a.tenant.pk}/members"
    me = f"{url}/{w.a.memberships['owner'].pk}"
    for r in (call(c, "delete", me), call(c, "patch", me, {"role": "admin"})):
        assert r.status_code == 400, r.content
        assert "owner" in r.json()["error"]["message"]
    assert Membership.objects.get(pk=w.a.memberships["owner"].pk).role == "owner"
    staff = as_(w.staff)
    assert call(staff, "delete", me).status_code == 400  # not even staff

    # With a second owner, the first may step down, then leave.
    second = f"{url}/{w.a.memberships['admin'].pk}"
    assert call(c, "patch", second, {"role": "owner"}).json()["role"] == "owner"
    assert call(c, "patch", me, {"role": "admin"}).json()["role"] == "admin"
    assert call(c, "delete", me).status_code == 204
    assert call(c, "get", f"/api/tenants/{w.a.tenant.pk}").status_code == 404
    only = as_(w.a.users["admin"])
    assert call(only, "delete", second).status_code == 400
    assert Membership.objects.filter(tenant=w.a.tenant, role="owner").count() == 1


def test_anyone_may_leave(world: World) -> None:
    w = world
    c = as_(w.a.users["member"])
    url = f"/api/tenants/{w.a.tenant.pk}/members"
    other = call(c, "delete", f"{url}/{w.a.extra.pk}")
    assert other.status_code == 403
    assert call(c, "delete", f"{url}/{w.a.memberships['member'].pk}").status_code == 204
    _assert_not_found(c.get(f"/api/tenants/{w.a.tenant.pk}"), "after leaving")


# Invitations ------------------------------------------------------------------------------


def _invite(c: Client, w: World, email: str, role: str = "member") -> Any:
    return call(
        c, "post", f"/api/tenants/{w.a.tenant.pk}/invitations", {"email": email, "role": role}
    )


def test_an_invitation_is_accepted_once_by_its_email(world: World) -> None:
    w = world
    admin = as_(w.a.users["admin"])
    r = _invite(admin, w, "Newbie@Else.Example", "billing")
    assert r.status_code == 201, r.content
    token = r.json()["token"]
    assert r.json()["state"] == "pending" and r.json()["invited_by"] == "acme-admin"
    listed = admin.get(f"/api/tenants/{w.a.tenant.pk}/invitations")
    assert token not in listed.content.decode()
    for inv in Invitation.objects.all():
        assert inv.token_hash not in listed.content.decode()
        assert token not in (inv.token_hash, inv.email)

    # Someone else holding the token cannot use it.
    wrong = call(as_(w.outsider), "post", "/api/invitations/accept", {"token": token})
    assert wrong.status_code == 400 and "email" in wrong.json()["error"]["message"]
    assert not Membership.objects.filter(user=w.outsider).exists()

    newbie = as_(w.newcomer)
    r = call(newbie, "post", "/api/invitations/accept", {"token": token})
    assert r.status_code == 201, r.content
    assert r.json()["tenant"]["name"] == "acme" and r.json()["membership"]["role"] == "billing"
    assert newbie.get(f"/api/tenants/{w.a.tenant.pk}/invoices").status_code == 200
    again = call(newbie, "post", "/api/invitations/accept", {"token": token})
    assert again.status_code == 400 and "already" in again.json()["error"]["message"]
    states = {
        i["email"]: i["state"]
        for i in admin.get(f"/api/tenants/{w.a.tenant.pk}/invitations").json()["data"]
    }
    assert states == {"Newbie@Else.Example": "accepted", "new@acme.example": "pending"}
    # An accepted invitation cannot be withdrawn.
    accepted = Invitation.objects.get(email="Newbie@Else.Example")
    r = call(admin, "delete", f"/api/tenants/{w.a.tenant.pk}/invitations/{accepted.pk}")
    assert r.status_code == 400


def test_an_invitation_expires(world: World) -> None:
    w = world
    token = _invite(as_(w.a.users["owner"]), w, "newbie@else.example").json()["token"]
    Invitation.objects.filter(email="newbie@else.example").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    r = call(as_(w.newcomer), "post", "/api/invitations/accept", {"token": token})
    assert r.status_code == 400 and "expired" in r.json()["error"]["message"]
    assert not Membership.objects.filter(user=w.newcomer).exists()


def test_unknown_invitation_tokens_and_withdrawn_invitations(world: World) -> None:
    w = world
    c = as_(w.newcomer)
    for token in ("nope", "x" * 43, "", w.a.invitation.token_hash):
        r = call(c, "post", "/api/invitations/accept", {"token": token})
        assert r.status_code in (400, 404), r.content
        assert set(r.json()["error"]) == {"message", "code"}
    owner = as_(w.a.users["owner"])
    token = _invite(owner, w, "newbie@else.example").json()["token"]
    pending = Invitation.objects.get(email="newbie@else.example")
    r = call(owner, "delete", f"/api/tenants/{w.a.tenant.pk}/invitations/{pending.pk}")
    assert r.status_code == 204
    r = call(c, "post", "/api/invitations/accept", {"token": token})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert not Membership.objects.filter(user=w.newcomer).exists()
    r = Client().post("/api/invitations/accept", {"token": token}, content_type="application/json")
    assert r.status_code in (401, 403) and r.json()["error"]["code"] == "not_authenticated"


def test_only_owners_invite_owners(world: World) -> None:
    w = world
    assert _invite(as_(w.a.users["admin"]), w, "newbie@else.example", "owner").status_code == 403
    r = _invite(as_(w.a.users["owner"]), w, "newbie@else.example", "owner")
    assert r.status_code == 201
    assert call(as_(w.newcomer), "post", "/api/invitations/accept", r.json()).status_code == 201
    assert Membership.objects.get(user=w.newcomer).role == "owner"
    assert _invite(as_(w.a.users["owner"]), w, "not-an-email").status_code == 400


# Usage and invoices -----------------------------------------------------------------------


def test_usage_is_the_tenants_own(world: World) -> None:
    w = world
    c = as_(w.a.users["member"])
    url = f"/api/tenants/{w.a.tenant.pk}/usage"
    by_model = c.get(url, {"group_by": "model"}).json()
    assert by_model["group_by"] == "model"
    rows = {r["model"]: r for r in by_model["data"]}
    assert set(rows) == {"acme-model", "shared-model"}
    assert (rows["acme-model"]["requests"], rows["acme-model"]["total_tokens"]) == (2, 30)
    assert (rows["shared-model"]["requests"], rows["shared-model"]["prompt_tokens"]) == (1, 7)

    by_key = c.get(url, {"group_by": "key"}).json()["data"]
    assert [r["api_key"] for r in by_key] == [w.a.key.display, None]

    today = timezone.now().date()
    by_day = c.get(url).json()  # default: this month
    assert by_day["start"] == today.replace(day=1).isoformat()
    assert [(r["day"], r["requests"]) for r in by_day["data"]] == [(today.isoformat(), 3)]
    for group in ("modality",):
        got = c.get(url, {"group_by": group}).json()["data"]
        assert sum(r["requests"] for r in got) == 3
    assert "bolt" not in json.dumps(c.get(url, {"group_by": "key"}).json())


def test_usage_periods(world: World) -> None:
    w = world
    old = timezone.now() - timedelta(days=70)
    UsageEvent.objects.filter(request_id="acme-req-0").update(created_at=old)
    c = as_(w.a.users["owner"])
    url = f"/api/tenants/{w.a.tenant.pk}/usage"
    assert sum(r["requests"] for r in c.get(url).json()["data"]) == 2
    day = old.date().isoformat()
    one_day = c.get(url, {"start": day, "end": day}).json()
    assert [(r["day"], r["requests"]) for r in one_day["data"]] == [(day, 1)]
    for bad in (
        {"group_by": "tenant"},
        {"start": "2026-02-30"},
        {"start": "2026-03-02", "end": "2026-03-01"},
    ):
        r = c.get(url, bad)
        assert r.status_code == 400, (bad, r.content)
        assert r.json()["error"]["code"] == "invalid_request"


def test_usage_csv_is_streamed_and_the_tenants_own(world: World) -> None:
    w = world
    c = as_(w.a.users["billing"])
    r = c.get(f"/api/tenants/{w.a.tenant.pk}/usage.csv", HTTP_ACCEPT="text/csv")
    assert r.status_code == 200, r.content
    assert r.streaming and r["Content-Type"].startswith("text/csv")
    assert "attachment" in r["Content-Disposition"]
    text = b"".join(r.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(row["request_id"] for row in rows) == [
        "acme-req-0",
        "acme-req-1",
        "acme-req-shared",
    ]
    assert "bolt" not in text
    yesterday = (timezone.now() - timedelta(days=1)).date().isoformat()
    r = c.get(f"/api/tenants/{w.a.tenant.pk}/usage.csv", {"start": yesterday, "end": yesterday})
    assert len(list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))) == 1
    bad = c.get(f"/api/tenants/{w.a.tenant.pk}/usage.csv", {"start": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


@pytest.mark.django_db(transaction=True)  # the ASGI view reads on its own thread
async def test_usage_csv_streams_in_chunks_under_asgi(world: World) -> None:
    """Under ASGI a synchronous iterator would be read whole before anything is sent:
    the view hands Django an asynchronous one, read in batches."""
    await sync_to_async(_more_usage)(world, 1200)
    c = AsyncClient()
    await c.aforce_login(world.a.users["member"])
    try:
        r = await c.get(f"/api/tenants/{world.a.tenant.pk}/usage.csv")
        assert r.status_code == 200 and r.streaming and r.is_async
        chunks = [chunk async for chunk in r.streaming_content]
    finally:
        # The view's thread keeps its connection; close it, or the test database
        # cannot be dropped at the end.
        await sync_to_async(connections.close_all)()
    assert len(chunks) >= 3
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(rows) == 1203
    assert all(row["request_id"].startswith("acme-") for row in rows)


def _more_usage(w: World, n: int) -> None:
    for i in range(n):
        usage_record(
            request_id=f"acme-bulk-{i}",
            tenant_id=w.a.tenant.pk,
            api_key_id=w.a.key.pk,
            model="acme-model",
            modality="chat",
            usage=Usage(prompt_tokens=1),
        )
    usage_record(
        request_id="bolt-bulk",
        tenant_id=w.b.tenant.pk,
        api_key_id=None,
        model="bolt-model",
        modality="chat",
        usage=Usage(prompt_tokens=1),
    )


def test_invoices_are_the_tenants_own(world: World) -> None:
    w = world
    older = Invoice.objects.create(
        tenant=w.a.tenant,
        period_start=date(2020, 1, 1),
        period_end=date(2020, 1, 31),
        total=Decimal("3"),
    )
    c = as_(w.a.users["billing"])
    url = f"/api/tenants/{w.a.tenant.pk}/invoices"
    listed = c.get(url).json()["data"]
    assert [i["id"] for i in listed] == [w.a.invoice.pk, older.pk]
    assert "lines" not in listed[0]
    got = c.get(f"{url}/{w.a.invoice.pk}").json()
    assert Decimal(got["total"]) == Decimal("1.25")
    assert got["lines"][0]["model"] == "acme-model"


# Plans ------------------------------------------------------------------------------------


def test_plans_are_staff_only(world: World) -> None:
    w = world
    pro = Plan.objects.get(name="pro")
    for user in [*w.a.users.values(), w.outsider]:
        c = as_(user)
        for method, url, body in (
            ("get", "/api/plans", None),
            ("post", "/api/plans", {"name": "mine"}),
            ("get", f"/api/plans/{pro.pk}", None),
            ("patch", f"/api/plans/{pro.pk}", {"tokens_per_day": None}),
        ):
            r = call(c, method, url, body)
            assert r.status_code == 403, (user.username, method, url)
            assert r.json()["error"]["code"] == "forbidden"
    assert Client().get("/api/plans").status_code in (401, 403)
    assert not Plan.objects.filter(name="mine").exists()
    pro.refresh_from_db()
    assert pro.tokens_per_day == 20_000_000


def test_staff_create_and_edit_plans(world: World) -> None:
    w = world
    c = as_(w.staff)
    assert [p["name"] for p in c.get("/api/plans").json()["data"]] == ["enterprise", "free", "pro"]
    r = call(
        c,
        "post",
        "/api/plans",
        {"name": "team", "tokens_per_day": 1000, "allowed_models": ["m1", "m2"]},
    )
    assert r.status_code == 201, r.content
    team = r.json()
    assert team["tokens_per_day"] == 1000 and team["requests_per_day"] is None
    assert call(c, "post", "/api/plans", {"name": "team"}).status_code == 400
    assert call(c, "post", "/api/plans", {"name": "Not A Slug"}).status_code == 400

    url = f"/api/plans/{team['id']}"
    r = call(c, "patch", url, {"tokens_per_day": None, "max_concurrent": 2, "allowed_models": []})
    assert r.status_code == 200, r.content
    assert (r.json()["tokens_per_day"], r.json()["max_concurrent"]) == (None, 2)
    assert r.json()["allowed_models"] == []
    assert call(c, "patch", url, {"max_concurrent": -1}).status_code == 400
    assert call(c, "patch", url, {"name": "renamed"}).status_code == 400
    assert call(c, "patch", url, {"allowed_models": "m1"}).status_code == 400

    # A plan's edits reach its tenants' limits.
    pro = Plan.objects.get(name="pro")
    assert call(c, "patch", f"/api/plans/{pro.pk}", {"allowed_models": ["m9"]}).status_code == 200
    assert caller_from_key(w.a.plaintext).allowed_models == ("m9",)
    call(c, "patch", f"/api/plans/{pro.pk}", {"requests_per_minute": 7})
    got = as_(w.a.users["member"]).get(f"/api/tenants/{w.a.tenant.pk}").json()
    assert got["limits"]["requests_per_minute"] == 7 and got["allowed_models"] == ["m9"]

    # The queue share and the priority cap are plan data over the API too.
    r = call(c, "patch", url, {"queue_weight": 3, "max_priority": "batch"})
    assert r.status_code == 200, r.content
    assert (r.json()["queue_weight"], r.json()["max_priority"]) == (3, "batch")
    for bad in ({"queue_weight": 0}, {"queue_weight": 101}, {"max_priority": "urgent"}):
        assert call(c, "patch", url, bad).status_code == 400, bad
    team_tenant = tenant_create(name="team-co", plan="team")
    _, team_key = api_key_create(tenant=team_tenant)
    caller = caller_from_key(team_key)
    assert (caller.queue_weight, caller.max_priority) == (3, "batch")


# Authentication and errors ----------------------------------------------------------------


def test_http_basic_and_the_error_format(world: World) -> None:
    w = world
    c = Client()
    url = f"/api/tenants/{w.a.tenant.pk}"
    assert c.get(url, **basic("acme-owner", PASSWORD)).json()["name"] == "acme"
    _assert_not_found(
        c.get(f"/api/tenants/{w.b.tenant.pk}", **basic("acme-owner", PASSWORD)), "basic"
    )
    for headers in ({}, basic("acme-owner", "wrong")):
        r = c.get(url, **headers)
        assert r.status_code in (401, 403)
        assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "code"}
    r = call(as_(w.a.users["owner"]), "post", f"{url}/keys", {"scopes": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert "scopes" in r.json()["error"]["message"]
