"""The consent ledger: grant and withdraw in one call each, the state at any past moment,
who may record for whom over /gdpr/consents, export and erasure, and prompt retention
off unless consented or contracted."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.test import Client

from gdpr import audit, consent, providers, subjects
from gdpr.models import ConsentRecord
from tenants.services import membership_add, operator_create, tenant_create

pytestmark = pytest.mark.django_db

TEXT = "I agree that rbee keeps my prompts for 30 days to debug problems.\n"
ALICE = subjects.user("alice@example.com")


@pytest.fixture(autouse=True)
def _home(tmp_path: Any, monkeypatch: Any, settings: Any) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_grant_withdraw_and_the_state_at_any_moment() -> None:
    assert not consent.consent_given(subject=ALICE, purpose="prompt_retention")
    g = consent.consent_grant(
        subject=ALICE, purpose="prompt_retention", text=TEXT, mechanism="portal",
        recorded_by=ALICE,
    )  # fmt: skip
    assert g.text_sha256 == hashlib.sha256(TEXT.encode()).hexdigest()
    time.sleep(0.01)
    w = consent.consent_withdraw(
        subject=ALICE, purpose="prompt_retention", mechanism="portal", recorded_by=ALICE
    )
    assert w.at > g.at
    now = consent.consent_state(subject=ALICE)["prompt_retention"]
    assert not now.granted and now.since == w.at
    then = consent.consent_state(subject=ALICE, at=g.at)["prompt_retention"]
    assert then.granted and then.text_sha256 == g.text_sha256 and then.mechanism == "portal"
    before = consent.consent_state(subject=ALICE, at=g.at.replace(year=2000))
    assert not before["prompt_retention"].granted and before["prompt_retention"].since is None
    # Other purposes are untouched; the ledger only grew.
    assert not consent.consent_given(subject=ALICE, purpose="product_email")
    assert ConsentRecord.objects.count() == 2
    # Both are audit events about Alice (sealed, readable in her export).
    actions = [e["action"] for e in audit.events_for_subject(ALICE)]
    assert actions == ["consent.grant", "consent.withdraw"]


def test_bad_purposes_mechanisms_and_textless_grants_are_refused() -> None:
    for kwargs in (
        {"purpose": "profiling", "text": TEXT, "mechanism": "portal"},
        {"purpose": "product_email", "text": TEXT, "mechanism": "carrier-pigeon"},
        {"purpose": "product_email", "text": "  ", "mechanism": "portal"},
    ):
        with pytest.raises(consent.ConsentError):
            consent.consent_grant(subject=ALICE, recorded_by=ALICE, **kwargs)
    assert not ConsentRecord.objects.exists()


def test_prompt_retention_is_off_unless_consented_or_contracted() -> None:
    bob = subjects.end_user("shop", "bob")
    allowed = consent.prompt_retention_allowed
    assert not allowed(tenant_contract=False, end_user=None)
    assert not allowed(tenant_contract=False, end_user=bob)
    assert allowed(tenant_contract=True, end_user=None)
    consent.consent_grant(
        subject=bob, purpose="prompt_retention", text=TEXT, mechanism="api", recorded_by="t"
    )
    assert allowed(tenant_contract=False, end_user=bob)
    consent.consent_grant(
        subject=bob, purpose="product_email", text=TEXT, mechanism="api", recorded_by="t"
    )
    consent.consent_withdraw(
        subject=bob, purpose="prompt_retention", mechanism="api", recorded_by="t"
    )
    assert not allowed(tenant_contract=False, end_user=bob)


def test_export_and_erase_through_the_provider_registry() -> None:
    (p,) = [p for p in providers.registered() if p.name == "gdpr.consents"]
    consent.consent_grant(
        subject=ALICE, purpose="product_email", text=TEXT, mechanism="cli", recorded_by="cli"
    )
    other = subjects.user("carol@example.com")
    consent.consent_grant(
        subject=other, purpose="product_email", text=TEXT, mechanism="cli", recorded_by=ALICE
    )
    (rec,) = p.export(ALICE)
    assert rec["purpose"] == "product_email" and rec["action"] == "grant"
    assert rec["text_sha256"] == hashlib.sha256(TEXT.encode()).hexdigest()
    erased = p.erase(ALICE)
    assert (erased.deleted, erased.pseudonymised) == (1, 1)
    assert p.export(ALICE) == []
    assert not ConsentRecord.objects.filter(subject=str(ALICE)).exists()
    # Carol's consent stays, no longer naming Alice as its recorder.
    assert ConsentRecord.objects.get(subject=str(other)).recorded_by == "erased-subject"
    assert p.erase(ALICE).deleted == 0  # idempotent


# --- HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def people() -> dict[str, User]:
    shop = tenant_create(name="shop")
    tenant_create(name="rival")
    out = {
        "alice": User.objects.create_user("alice", "alice@example.com", "pw"),
        "admin": User.objects.create_user("admin", "admin@shop.example", "pw"),
        "member": User.objects.create_user("member", "member@shop.example", "pw"),
        "ops": operator_create(
            username="ops", email="ops@x.example", password="pw", areas=["audit"]
        ),
    }
    membership_add(tenant=shop, user=out["admin"], role="admin")
    membership_add(tenant=shop, user=out["member"], role="member")
    return out


def session(user: User) -> Client:
    c = Client(enforce_csrf_checks=False)
    c.force_login(user)
    return c


def basic(username: str) -> Client:
    token = base64.b64encode(f"{username}:pw".encode()).decode()
    return Client(HTTP_AUTHORIZATION=f"Basic {token}")


def post(c: Client, body: dict[str, Any]) -> Any:
    return c.post("/gdpr/consents", json.dumps(body), content_type="application/json")


def test_a_person_grants_and_withdraws_their_own_in_one_call_each(
    people: dict[str, User],
) -> None:
    c = session(people["alice"])
    r = post(c, {"purpose": "product_email", "action": "grant", "text": TEXT})
    assert r.status_code == 201, r.content
    got = r.json()
    assert got["subject"] == "user:alice@example.com" and got["mechanism"] == "portal"
    granted_at = got["at"]
    assert c.get("/gdpr/consents").json()["purposes"]["product_email"]["granted"] is True
    time.sleep(0.01)
    r = post(c, {"purpose": "product_email", "action": "withdraw"})
    assert r.status_code == 201 and r.json()["action"] == "withdraw"
    assert c.get("/gdpr/consents").json()["purposes"]["product_email"]["granted"] is False
    then = c.get(f"/gdpr/consents?at={quote(granted_at)}").json()
    assert then["purposes"]["product_email"]["granted"] is True
    assert c.get("/gdpr/consents?at=yesterday").status_code == 400
    hist = c.get("/gdpr/consents/history").json()["data"]
    assert [h["action"] for h in hist] == ["grant", "withdraw"]
    # Over HTTP Basic the mechanism is "api".
    r = post(basic("alice"), {"purpose": "prompt_retention", "action": "grant", "text": TEXT})
    assert r.status_code == 201 and r.json()["mechanism"] == "api"
    for bad in (
        {"purpose": "profiling", "action": "grant", "text": TEXT},
        {"purpose": "product_email", "action": "grant"},
        {"purpose": "product_email", "action": "maybe"},
        {"purpose": "product_email", "action": "grant", "text": TEXT, "subject": "nobody"},
    ):
        assert post(c, bad).status_code == 400, bad
    assert Client().get("/gdpr/consents").status_code in (401, 403)


def test_who_may_record_and_read_for_whom(people: dict[str, User]) -> None:
    grant = {"purpose": "prompt_retention", "action": "grant", "text": TEXT}
    # A tenant admin records its end user's consent.
    r = post(session(people["admin"]), {**grant, "subject": "shop:bob"})
    assert r.status_code == 201, r.content
    row = ConsentRecord.objects.get(pk=r.json()["id"])
    assert (row.subject, row.tenant_id) == (
        "enduser:shop:bob",
        people["admin"].memberships.get().tenant_id,
    )
    assert row.recorded_by == "user:admin@shop.example"
    # A plain member, or an admin of another tenant, does not see the tenant: 404.
    assert post(session(people["member"]), {**grant, "subject": "shop:bob"}).status_code == 404
    assert post(session(people["admin"]), {**grant, "subject": "rival:bob"}).status_code == 404
    assert session(people["member"]).get("/gdpr/consents?subject=shop:bob").status_code == 404
    # Nobody records a person's consent for them, operators included.
    for who in ("admin", "ops"):
        r = post(session(people[who]), {**grant, "subject": "alice@example.com"})
        assert r.status_code == 403, (who, r.content)
    assert (
        session(people["admin"]).get("/gdpr/consents?subject=alice@example.com").status_code == 403
    )
    # Operators with the audit permission read anyone's, and record for no end user.
    ops = session(people["ops"])
    assert ops.get("/gdpr/consents?subject=alice@example.com").status_code == 200
    state = ops.get("/gdpr/consents?subject=shop:bob").json()
    assert state["purposes"]["prompt_retention"]["granted"] is True
    assert post(ops, {**grant, "subject": "shop:bob"}).status_code == 404
    assert ConsentRecord.objects.count() == 1
