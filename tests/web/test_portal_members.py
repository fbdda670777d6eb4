"""/portal/t/<t>/members: the API's rules for who may invite, change roles and remove;
only owners touch the owner role; the last owner stays; anyone may leave."""

from __future__ import annotations

import pytest

from tenants.models import Invitation, Membership
from tenants.services import invitation_create
from tests.web.test_portal import member, signed_in, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _public_url(settings) -> None:  # type: ignore[no-untyped-def]
    """E-mailed links need a public origin (web/links.py); the test client's host."""
    settings.RBEE_PUBLIC_URL = "http://testserver"


@pytest.fixture
def acme():  # type: ignore[no-untyped-def]
    t = tenant("acme")
    member(t, "owner@example.com", "owner")
    member(t, "admin@example.com", "admin")
    member(t, "m@example.com", "member")
    member(t, "b@example.com", "billing")
    return t


def _m(t, email: str) -> Membership:  # type: ignore[no-untyped-def]
    return Membership.objects.get(tenant=t, user__email=email)


def _as(t, email: str):  # type: ignore[no-untyped-def]
    return signed_in(_m(t, email).user)


@pytest.mark.parametrize("email", ["m@example.com", "b@example.com"])
def test_every_member_sees_the_members_but_only_managers_manage(acme, email: str) -> None:  # type: ignore[no-untyped-def]
    client = _as(acme, email)
    page = client.get("/portal/t/acme/members")
    assert page.status_code == 200
    for who in ("owner@example.com", "admin@example.com", "m@example.com", "b@example.com"):
        assert who.encode() in page.content
    assert b"Invite someone" not in page.content and b"Change role" not in page.content
    target = _m(acme, "admin@example.com")
    assert (
        client.post(
            "/portal/t/acme/members/invite",
            {"email": "x@example.com", "role": "member", "ttl_days": "7"},
        ).status_code
        == 403
    )
    assert (
        client.post(f"/portal/t/acme/members/{target.pk}/role", {"role": "member"}).status_code
        == 403
    )
    assert client.post(f"/portal/t/acme/members/{target.pk}/remove").status_code == 403
    assert not Invitation.objects.exists()
    target.refresh_from_db()
    assert target.role == "admin"


def test_an_admin_manages_members_but_not_the_owner_role(acme) -> None:  # type: ignore[no-untyped-def]
    client = _as(acme, "admin@example.com")
    owner, plain = _m(acme, "owner@example.com"), _m(acme, "m@example.com")
    assert b"Invite someone" in client.get("/portal/t/acme/members").content
    invite_owner = client.post(
        "/portal/t/acme/members/invite",
        {"email": "x@example.com", "role": "owner", "ttl_days": "7"},
    )
    assert invite_owner.status_code == 403 and not Invitation.objects.exists()
    assert (
        client.post(f"/portal/t/acme/members/{plain.pk}/role", {"role": "owner"}).status_code == 403
    )
    assert (
        client.post(f"/portal/t/acme/members/{owner.pk}/role", {"role": "member"}).status_code
        == 403
    )
    assert client.post(f"/portal/t/acme/members/{owner.pk}/remove").status_code == 403
    owner.refresh_from_db()
    plain.refresh_from_db()
    assert owner.role == "owner" and plain.role == "member"
    changed = client.post(f"/portal/t/acme/members/{plain.pk}/role", {"role": "billing"})
    assert changed.status_code == 302
    plain.refresh_from_db()
    assert plain.role == "billing"
    removed = client.post(f"/portal/t/acme/members/{plain.pk}/remove")
    assert removed.status_code == 302
    assert not Membership.objects.filter(pk=plain.pk).exists()
    bad = client.post(
        f"/portal/t/acme/members/{_m(acme, 'b@example.com').pk}/role", {"role": "king"}
    )
    assert bad.status_code == 400 and b"Choose one of the roles." in bad.content
    invalid = client.post(
        "/portal/t/acme/members/invite",
        {"email": "not-an-email", "role": "member", "ttl_days": "7"},
    )
    assert invalid.status_code == 400 and b"Enter a valid email address." in invalid.content
    assert not Invitation.objects.exists()


def test_the_last_owner_can_neither_leave_nor_step_down_until_another_owner_exists(acme) -> None:  # type: ignore[no-untyped-def]
    client = _as(acme, "owner@example.com")
    owner, admin = _m(acme, "owner@example.com"), _m(acme, "admin@example.com")
    page = client.get("/portal/t/acme/members").content
    assert b"You are the only owner" in page and b"Leave acme" not in page
    leave = client.post(f"/portal/t/acme/members/{owner.pk}/remove")
    assert leave.status_code == 400 and b"A tenant must keep at least one owner." in leave.content
    demote = client.post(f"/portal/t/acme/members/{owner.pk}/role", {"role": "admin"})
    assert demote.status_code == 400
    owner.refresh_from_db()
    assert owner.role == "owner"
    assert (
        client.post(f"/portal/t/acme/members/{admin.pk}/role", {"role": "owner"}).status_code == 302
    )
    left = client.post(f"/portal/t/acme/members/{owner.pk}/remove")
    assert left.status_code == 302 and left["Location"] == "/portal/"
    assert not Membership.objects.filter(pk=owner.pk).exists()
    assert client.get("/portal/t/acme/members").status_code == 404


def test_a_member_may_leave(acme) -> None:  # type: ignore[no-untyped-def]
    plain = _m(acme, "m@example.com")
    response = _as(acme, "m@example.com").post(f"/portal/t/acme/members/{plain.pk}/remove")
    assert response.status_code == 302 and response["Location"] == "/portal/"
    assert not Membership.objects.filter(pk=plain.pk).exists()


def test_invitations_are_listed_and_withdrawn_by_managers(acme) -> None:  # type: ignore[no-untyped-def]
    inv, _ = invitation_create(
        tenant=acme, email="soon@example.com", role="member", invited_by=None
    )
    owner_inv, _ = invitation_create(
        tenant=acme, email="boss@example.com", role="owner", invited_by=None
    )
    admin = _as(acme, "admin@example.com")
    page = admin.get("/portal/t/acme/members")
    assert b"soon@example.com" in page.content and b"pending" in page.content
    assert (
        b"soon@example.com" not in _as(acme, "m@example.com").get("/portal/t/acme/members").content
    )
    assert (
        _as(acme, "m@example.com").post(f"/portal/t/acme/invitations/{inv.pk}/withdraw").status_code
        == 403
    )
    assert admin.post(f"/portal/t/acme/invitations/{owner_inv.pk}/withdraw").status_code == 403
    assert admin.post(f"/portal/t/acme/invitations/{inv.pk}/withdraw").status_code == 302
    assert list(Invitation.objects.values_list("email", flat=True)) == ["boss@example.com"]


def test_an_invitation_whose_email_cannot_be_sent_says_so(acme, settings) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    settings.EMAIL_USE_TLS = False
    response = _as(acme, "owner@example.com").post(
        "/portal/t/acme/members/invite",
        {"email": "x@example.com", "role": "member", "ttl_days": "7"},
    )
    assert response.status_code == 502
    assert b"its e-mail could not be sent" in response.content
    assert list(Invitation.objects.values_list("email", flat=True)) == ["x@example.com"]
