"""Invitations through the portal (new account, existing account, wrong e-mail, expired,
reused), password reset (the e-mail, a link that works once), and no e-mail enumeration
(identical answers for known and unknown e-mails)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.utils import timezone

from tenants.models import Invitation, Membership
from tenants.services import invitation_create
from tests.web.test_portal import PW, member, person, signed_in, tenant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _public_url(settings) -> None:  # type: ignore[no-untyped-def]
    """E-mailed links need a public origin (web/links.py); the test client's host."""
    settings.RBEE_PUBLIC_URL = "http://testserver"


LINK = re.compile(r"http://testserver/portal/invitations/(\S+)")
NEW_PW = "a-new-pw-987654321"


def _invite(email: str, role: str = "member") -> tuple[Client, str]:
    """The owner of acme invites `email` through the page; the token from the e-mail."""
    owner = User.objects.get(email="owner@example.com")
    client = signed_in(owner)
    mail.outbox.clear()
    response = client.post(
        "/portal/t/acme/members/invite", {"email": email, "role": role, "ttl_days": "7"}
    )
    assert response.status_code == 302 and response["Location"] == "/portal/t/acme/members"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [email]
    match = LINK.search(str(mail.outbox[0].body))
    assert match is not None
    return client, match.group(1)


@pytest.fixture
def acme():  # type: ignore[no-untyped-def]
    t = tenant("acme")
    member(t, "owner@example.com", "owner")
    return t


def test_a_new_person_sets_a_password_on_the_invitation_page_and_joins(acme) -> None:  # type: ignore[no-untyped-def]
    _, token = _invite("New.Person@example.com", "admin")
    assert "acme" in mail.outbox[0].body and "admin" in mail.outbox[0].body
    visitor = Client()
    page = visitor.get(f"/portal/invitations/{token}")
    assert page.status_code == 200
    assert b"<strong>acme</strong>" in page.content and b"Choose a password" in page.content
    mismatch = visitor.post(
        f"/portal/invitations/{token}", {"password1": NEW_PW, "password2": NEW_PW + "x"}
    )
    assert mismatch.status_code == 400 and b"The two passwords differ." in mismatch.content
    assert not User.objects.filter(email__iexact="new.person@example.com").exists()
    response = visitor.post(
        f"/portal/invitations/{token}", {"password1": NEW_PW, "password2": NEW_PW}
    )
    assert response.status_code == 302 and response["Location"] == "/portal/t/acme/"
    user = User.objects.get(email="New.Person@example.com")
    assert user.check_password(NEW_PW)
    assert Membership.objects.get(tenant=acme, user=user).role == "admin"
    assert visitor.get("/portal/t/acme/").status_code == 200  # signed in
    # The link works once.
    again = Client().get(f"/portal/invitations/{token}")
    assert again.status_code == 410 and b"already used" in again.content
    reuse = Client().post(
        f"/portal/invitations/{token}", {"password1": NEW_PW, "password2": NEW_PW}
    )
    assert reuse.status_code == 410
    assert User.objects.filter(email__iexact="new.person@example.com").count() == 1


def test_an_existing_account_signs_in_and_accepts(acme) -> None:  # type: ignore[no-untyped-def]
    existing = person("known@example.com")
    _, token = _invite("known@example.com")
    # Setting a password for an e-mail that has an account is refused (sign in instead).
    response = Client().post(
        f"/portal/invitations/{token}", {"password1": NEW_PW, "password2": NEW_PW}
    )
    assert response.status_code == 400
    assert b"An account with this e-mail exists" in response.content
    existing.refresh_from_db()
    assert (
        existing.check_password(PW) and User.objects.filter(email="known@example.com").count() == 1
    )
    assert not Membership.objects.filter(tenant=acme, user=existing).exists()
    client = signed_in(existing)
    page = client.get(f"/portal/invitations/{token}")
    assert page.status_code == 200 and b"Accept and join acme" in page.content
    accepted = client.post(f"/portal/invitations/{token}")
    assert accepted.status_code == 302 and accepted["Location"] == "/portal/t/acme/"
    assert Membership.objects.get(tenant=acme, user=existing).role == "member"


def test_a_signed_in_person_with_another_email_cannot_accept(acme) -> None:  # type: ignore[no-untyped-def]
    _, token = _invite("invitee@example.com")
    other = person("other@example.com")
    client = signed_in(other)
    page = client.get(f"/portal/invitations/{token}")
    assert page.status_code == 200 and b"sent to another e-mail address" in page.content
    response = client.post(f"/portal/invitations/{token}")
    assert response.status_code == 400
    assert b"This invitation was sent to another email address." in response.content
    assert not Membership.objects.filter(tenant=acme, user=other).exists()
    assert Invitation.objects.get(email="invitee@example.com").accepted_at is None


def test_an_expired_or_unknown_invitation_makes_no_account(acme) -> None:  # type: ignore[no-untyped-def]
    invitation, token = invitation_create(
        tenant=acme, email="late@example.com", role="member", invited_by=None
    )
    Invitation.objects.filter(pk=invitation.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    page = Client().get(f"/portal/invitations/{token}")
    assert page.status_code == 410 and b"This invitation has expired." in page.content
    response = Client().post(
        f"/portal/invitations/{token}", {"password1": NEW_PW, "password2": NEW_PW}
    )
    assert response.status_code == 410
    assert not User.objects.filter(email="late@example.com").exists()
    unknown = Client().get("/portal/invitations/not-a-token")
    assert unknown.status_code == 404 and b"not valid" in unknown.content


def test_inviting_answers_the_same_for_known_and_unknown_emails(acme) -> None:  # type: ignore[no-untyped-def]
    person("known@example.com")
    client, _ = _invite("known@example.com")
    known_page = client.get("/portal/t/acme/members").content.decode()
    client, _ = _invite("stranger@example.com")
    stranger_page = client.get("/portal/t/acme/members").content.decode()

    def message(html: str, email: str) -> str:
        found = re.search(r'<li class="msg[^"]*">([^<]*)</li>', html)
        assert found is not None
        return found.group(1).replace(email, "EMAIL")

    assert message(known_page, "known@example.com") == message(
        stranger_page, "stranger@example.com"
    )


def test_password_reset_mails_a_link_that_works_once_and_never_tells_who_exists() -> None:
    user = person("member@example.com")
    mail.outbox.clear()
    known = Client().post("/portal/password-reset", {"email": "member@example.com"})
    unknown = Client().post("/portal/password-reset", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 302
    assert known["Location"] == unknown["Location"] == "/portal/password-reset/sent"
    sent = Client().get("/portal/password-reset/sent")
    assert b"If an account exists for that e-mail, we sent a link" in sent.content
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["member@example.com"]
    link = re.search(r"http://testserver(/portal/reset/\S+)", str(mail.outbox[0].body))
    assert link is not None
    browser = Client()
    form_url = browser.get(link.group(1))
    assert form_url.status_code == 302  # Django moves the token into the session
    form = browser.get(form_url["Location"])
    assert form.status_code == 200 and b"Choose a new password" in form.content
    done = browser.post(form_url["Location"], {"new_password1": NEW_PW, "new_password2": NEW_PW})
    assert done.status_code == 302 and done["Location"] == "/portal/reset/done"
    user.refresh_from_db()
    assert user.check_password(NEW_PW)
    # Used once: the same link now answers "not valid" and changes nothing.
    second = Client()
    again = second.get(link.group(1))
    assert again.status_code == 200 and b"This link is not valid" in again.content
    attempt = second.post(
        link.group(1), {"new_password1": "x-other-pw-123456", "new_password2": "x-other-pw-123456"}
    )
    assert attempt.status_code == 200
    user.refresh_from_db()
    assert user.check_password(NEW_PW)
    signed = Client().post("/portal/login", {"username": "member@example.com", "password": NEW_PW})
    assert signed.status_code == 302


def test_signing_in_from_the_invitation_page_comes_back_to_it(acme) -> None:  # type: ignore[no-untyped-def]
    person("back@example.com")
    _, token = _invite("back@example.com")
    visitor = Client(enforce_csrf_checks=True)
    page = visitor.get(f"/portal/invitations/{token}")
    login_url = f"/portal/login?next=/portal/invitations/{token}"
    assert f'href="{login_url}"'.encode() in page.content
    # Without the CSRF token nothing is made.
    forged = visitor.post(
        f"/portal/invitations/{token}", {"password1": NEW_PW, "password2": NEW_PW}
    )
    assert forged.status_code == 403
    assert User.objects.filter(email="back@example.com").count() == 1
    client = Client()
    signed = client.post(
        login_url,
        {"username": "back@example.com", "password": PW, "next": f"/portal/invitations/{token}"},
    )
    assert signed.status_code == 302 and signed["Location"] == f"/portal/invitations/{token}"
    assert client.post(signed["Location"]).status_code == 302
    assert Membership.objects.filter(tenant=acme, user__email="back@example.com").exists()
