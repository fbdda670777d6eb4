"""/portal/t/<t>/keys: create (the secret once), list (never the secret), revoke, rotate
with a grace period; members see and cannot change; billing members get 404."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from gdpr.models import AuditEvent
from kernel import secrets
from tenants.errors import KeyRejected
from tenants.models import ApiKey
from tenants.selectors import caller_from_key
from tenants.services import api_key_create
from tests.web.test_portal import member, signed_in, tenant

pytestmark = pytest.mark.django_db

MODEL = "smollm2-135m-instruct"


def _acme():  # type: ignore[no-untyped-def]
    acme = tenant("acme", [MODEL, "other-model"])
    owner = member(acme, "owner@example.com", "owner")
    return acme, owner


def test_an_owner_creates_a_key_and_sees_its_secret_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    acme, owner = _acme()
    client = signed_in(owner)
    events = AuditEvent.objects.filter(action="key.create").count()
    response = client.post(
        "/portal/t/acme/keys",
        {"name": "laptop", "endpoints": ["chat"], "models": [MODEL], "expires": "30"},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"].split(", ")
    key = ApiKey.objects.get(tenant=acme)
    html = response.content.decode()
    start = html.index("data-secret>") + len("data-secret>")
    secret = html[start : html.index("<", start)]
    assert secret.startswith(f"sk-rbee-{key.prefix}")
    assert secrets.digest(secret) == key.key_hash
    assert html.count(secret) == 4  # the key, curl, Python, Continue: all in this one answer
    assert key.name == "laptop"
    assert key.scopes == {"endpoints": ["chat"], "models": [MODEL]}
    assert key.created_by == owner
    assert key.expires_at is not None
    assert abs(key.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert AuditEvent.objects.filter(action="key.create").count() == events + 1
    assert caller_from_key(secret).tenant_id == acme.pk
    for path in ("/portal/t/acme/keys", "/portal/t/acme/", "/portal/t/acme/members"):
        later = client.get(path)
        assert later.status_code == 200
        assert secret not in later.content.decode()
    listed = client.get("/portal/t/acme/keys").content.decode()
    assert f"sk-rbee-{key.prefix}-…" in listed and "laptop" in listed
    assert secret not in caplog.text


@pytest.mark.parametrize(
    "form",
    [
        {"name": "x", "endpoints": ["bogus"]},
        {"name": "x", "models": ["not-in-the-plan"]},
        {"name": "x", "expires": "2"},
        {"name": "x" * 101},
    ],
)
def test_an_invalid_key_form_is_a_400_and_creates_nothing(form: dict[str, object]) -> None:
    _, owner = _acme()
    response = signed_in(owner).post("/portal/t/acme/keys", form)
    assert response.status_code == 400
    assert b'class="errorlist' in response.content
    assert ApiKey.objects.count() == 0


def test_revoke_stops_the_key() -> None:
    acme, owner = _acme()
    key, plaintext = api_key_create(tenant=acme, name="ci")
    response = signed_in(owner).post(f"/portal/t/acme/keys/{key.pk}/revoke")
    assert response.status_code == 302 and response["Location"] == "/portal/t/acme/keys"
    key.refresh_from_db()
    assert key.revoked_at is not None
    with pytest.raises(KeyRejected):
        caller_from_key(plaintext)
    page = signed_in(owner).get("/portal/t/acme/keys").content.decode()
    assert ">revoked</span>" in page


def test_rotate_gives_a_new_key_and_the_old_one_works_for_the_grace_period() -> None:
    acme, owner = _acme()
    old, old_plain = api_key_create(tenant=acme, name="ci", scopes={"endpoints": ["chat"]})
    client = signed_in(owner)
    response = client.post(f"/portal/t/acme/keys/{old.pk}/rotate", {"grace": "3600"})
    assert response.status_code == 200
    old.refresh_from_db()
    new = old.replaced_by
    assert new is not None and new.scopes == {"endpoints": ["chat"]} and new.name == "ci"
    html = response.content.decode()
    start = html.index("data-secret>") + len("data-secret>")
    new_plain = html[start : html.index("<", start)]
    assert secrets.digest(new_plain) == new.key_hash
    assert old_plain not in html
    assert old.expires_at is not None
    assert abs(old.expires_at - (timezone.now() + timedelta(hours=1))) < timedelta(minutes=1)
    assert caller_from_key(old_plain).tenant_id == acme.pk  # still in its grace period
    assert caller_from_key(new_plain).tenant_id == acme.pk
    # A rotated key is rotated once: its successor is the one to rotate next.
    again = client.post(f"/portal/t/acme/keys/{old.pk}/rotate", {"grace": "0"})
    assert again.status_code == 400
    assert b"already rotated" in again.content
    assert ApiKey.objects.filter(tenant=acme).count() == 2
    # No grace: the old key stops at once.
    client.post(f"/portal/t/acme/keys/{new.pk}/rotate", {"grace": "0"})
    with pytest.raises(KeyRejected):
        caller_from_key(new_plain)


def test_a_member_sees_the_keys_but_cannot_create_rotate_or_revoke() -> None:
    acme, _owner = _acme()
    key, _ = api_key_create(tenant=acme, name="ci")
    client = signed_in(member(acme, "m@example.com", "member"))
    page = client.get("/portal/t/acme/keys")
    assert page.status_code == 200 and b"ci" in page.content
    assert b"Create a key" not in page.content and b">Revoke<" not in page.content
    assert client.post("/portal/t/acme/keys", {"name": "mine"}).status_code == 403
    assert client.post(f"/portal/t/acme/keys/{key.pk}/revoke").status_code == 403
    assert client.post(f"/portal/t/acme/keys/{key.pk}/rotate", {"grace": "0"}).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and key.replaced_by is None
    assert ApiKey.objects.count() == 1


def test_a_billing_member_gets_404_for_everything_about_keys() -> None:
    acme, _owner = _acme()
    key, _ = api_key_create(tenant=acme, name="ci")
    client = signed_in(member(acme, "b@example.com", "billing"))
    assert client.get("/portal/t/acme/keys").status_code == 404
    assert client.post("/portal/t/acme/keys", {"name": "mine"}).status_code == 404
    assert client.post(f"/portal/t/acme/keys/{key.pk}/revoke").status_code == 404
    assert client.post(f"/portal/t/acme/keys/{key.pk}/rotate", {"grace": "0"}).status_code == 404
    overview = client.get("/portal/t/acme/")
    assert overview.status_code == 200
    assert b'href="/portal/t/acme/keys"' not in overview.content
    assert b"Active keys" not in overview.content
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.objects.count() == 1


def test_forms_need_the_csrf_token() -> None:
    acme, owner = _acme()
    key, _ = api_key_create(tenant=acme, name="ci")
    client = signed_in(owner, csrf=True)
    assert client.post("/portal/t/acme/keys", {"name": "x"}).status_code == 403
    assert client.post(f"/portal/t/acme/keys/{key.pk}/revoke").status_code == 403
    assert client.get(f"/portal/t/acme/keys/{key.pk}/revoke").status_code == 405
    key.refresh_from_db()
    assert key.revoked_at is None and ApiKey.objects.count() == 1
