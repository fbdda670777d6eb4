"""The links in password-reset and invitation e-mails never follow the request's Host
header: they are built from RBEE_PUBLIC_URL; without it, from the request only when its
host is loopback or ALLOWED_HOSTS is explicit; otherwise nothing is sent and the page
tells the operator to set RBEE_PUBLIC_URL (the same answer for every e-mail, so the reset
page still tells nobody who has an account)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client

from rbee.profile import security
from tenants.models import Invitation
from tests.web.test_portal import member, signed_in, tenant

pytestmark = pytest.mark.django_db

RESET = re.compile(r"(\S+)/portal/reset/\S+")
INVITE = re.compile(r"(\S+)/portal/invitations/\S+")


@pytest.fixture(autouse=True)
def _default_profile(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    # The embedded default: any host, no public URL.
    settings.ALLOWED_HOSTS = security({})["ALLOWED_HOSTS"]
    settings.RBEE_PUBLIC_URL = security({})["RBEE_PUBLIC_URL"]
    assert (settings.ALLOWED_HOSTS, settings.RBEE_PUBLIC_URL) == (["*"], "")
    mail.outbox.clear()


def _reset(host: str, email: str = "owner@example.com", **extra: str):  # type: ignore[no-untyped-def]
    User.objects.get_or_create(
        username="owner", defaults={"email": "owner@example.com", "is_superuser": True}
    )
    return Client(HTTP_HOST=host, **extra).post("/portal/password-reset", {"email": email})


def test_a_foreign_host_gets_no_reset_email_and_the_page_says_to_set_the_public_url() -> None:
    for email in ("owner@example.com", "nobody@example.com"):
        response = _reset("evil.example", email)
        assert response.status_code == 503
        assert b"RBEE_PUBLIC_URL" in response.content
    assert mail.outbox == []


def test_the_reset_link_is_built_from_the_public_url_whatever_the_host(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RBEE_PUBLIC_URL = "https://rbee.example:8443"
    response = _reset("evil.example")
    assert response.status_code == 302 and response["Location"] == "/portal/password-reset/sent"
    assert len(mail.outbox) == 1
    link = RESET.search(str(mail.outbox[0].body))
    assert link is not None and link.group(1) == "https://rbee.example:8443"


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("localhost:7833", "http://localhost:7833"),
        ("127.0.0.1:7833", "http://127.0.0.1:7833"),
        ("[::1]:7833", "http://[::1]:7833"),
    ],
)
def test_a_loopback_host_may_build_the_link_itself(host: str, origin: str) -> None:
    response = _reset(host)
    assert response.status_code == 302
    link = RESET.search(str(mail.outbox[0].body))
    assert link is not None and link.group(1) == origin


@pytest.mark.parametrize(
    ("host", "peer"),
    [
        ("anything.localhost:7833", "127.0.0.1"),  # not exactly a loopback name
        ("localhost:7833", "203.0.113.9"),  # a remote sender naming localhost
        ("127.0.0.1:7833", "203.0.113.9"),
    ],
)
def test_only_this_machine_asking_with_a_loopback_name_builds_the_link(
    host: str, peer: str
) -> None:
    response = _reset(host, REMOTE_ADDR=peer)
    assert response.status_code == 503 and b"RBEE_PUBLIC_URL" in response.content
    assert mail.outbox == []


def test_explicit_allowed_hosts_let_the_request_build_the_link(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ALLOWED_HOSTS = ["rbee.lan"]
    assert _reset("evil.example").status_code == 400  # Django refuses the Host itself
    assert mail.outbox == []
    response = _reset("rbee.lan")
    assert response.status_code == 302
    link = RESET.search(str(mail.outbox[0].body))
    assert link is not None and link.group(1) == "http://rbee.lan"


def _invite(host: str):  # type: ignore[no-untyped-def]
    acme = tenant("acme")
    owner = member(acme, "boss@example.com", "owner")
    client = signed_in(owner)
    client.defaults["HTTP_HOST"] = host
    return client.post(
        "/portal/t/acme/members/invite",
        {"email": "new@example.com", "role": "member", "ttl_days": "7"},
    )


def test_no_invitation_is_made_or_sent_from_a_foreign_host() -> None:
    response = _invite("evil.example")
    assert response.status_code == 503 and b"RBEE_PUBLIC_URL" in response.content
    assert not Invitation.objects.exists()
    assert mail.outbox == []


def test_the_invitation_link_is_built_from_the_public_url(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RBEE_PUBLIC_URL = "https://rbee.example"
    response = _invite("evil.example")
    assert response.status_code == 302
    link = INVITE.search(str(mail.outbox[0].body))
    assert link is not None and link.group(1) == "https://rbee.example"


def test_the_profile_reads_and_checks_the_public_url() -> None:
    from django.core.exceptions import ImproperlyConfigured

    assert security({"RBEE_PUBLIC_URL": "https://rbee.example/"})["RBEE_PUBLIC_URL"] == (
        "https://rbee.example"
    )
    for bad in (
        "rbee.example",
        "ftp://rbee.example",
        "https://rbee.example/portal",
        "https://",
        "https://rbee.example?",
        "https://rbee.example#",
        "https://rbee.example:99999",
        "https://rbee.example:abc",
        "https://a b.example",
        "https://[::1",
        "https://user:pw@rbee.example",
    ):
        with pytest.raises(ImproperlyConfigured, match="RBEE_PUBLIC_URL"):
            security({"RBEE_PUBLIC_URL": bad})
