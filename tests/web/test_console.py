"""The operators' console, tenants side (Django's test client on the real database):
every page and action is checked against the operator's area on the server, each change
goes through the apps' services with the operator as the audit log's actor, invalid input
is a 400 page that says what is wrong and changes nothing, and no key secret is shown."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from billing.models import Invoice
from gdpr import audit
from gdpr.models import AuditEvent
from tenants.models import ApiKey, Plan, Tenant
from tenants.services import api_key_create, tenant_create

pytestmark = pytest.mark.django_db

PW = "pw-123456789"
CODENAMES = {
    "fleet": "operate_fleet",
    "scheduler": "operate_scheduler",
    "tenants": "operate_tenants",
    "audit": "read_audit",
}


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()


def operator(username: str, *areas: str) -> Client:
    user = User.objects.create_user(username, f"{username}@example.com", PW, is_staff=True)
    for area in areas:
        user.user_permissions.add(Permission.objects.get(codename=CODENAMES[area]))
    client = Client()
    client.force_login(user)
    return client


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def actor_of(event: AuditEvent) -> Any:
    from gdpr.selectors import audit_events_view

    return audit_events_view([event])[0]["actor"]


@pytest.fixture
def plans() -> None:
    Plan.objects.create(name="free", requests_per_day=100)
    Plan.objects.create(name="pro", requests_per_day=10_000, queue_weight=4)


# Permissions ---------------------------------------------------------------------------

TENANT_PAGES = ["/console/tenants", "/console/plans", "/console/keys"]


@pytest.mark.parametrize("url", [*TENANT_PAGES, "/console/invoices"])
def test_tenant_pages_are_403_for_a_fleet_operator(url: str) -> None:
    assert operator("fleet-only", "fleet").get(url).status_code == 403


@pytest.mark.parametrize("url", ["/console/", *TENANT_PAGES, "/console/audit", "/console/hives"])
def test_a_signed_out_visitor_is_sent_to_sign_in(url: str) -> None:
    response = Client().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/ui/login?next=")


def test_a_signed_in_non_operator_gets_403() -> None:
    User.objects.create_user("plain", "plain@example.com", PW)
    client = Client()
    client.login(username="plain", password=PW)
    assert client.get("/console/").status_code == 403


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/console/tenants/new", {"name": "sneaky"}),
        ("/console/plans/new", {"name": "sneaky"}),
    ],
)
def test_tenant_actions_are_403_without_the_area_and_change_nothing(
    url: str, data: dict[str, str]
) -> None:
    client = operator("auditor", "audit", "fleet")
    assert client.post(url, data).status_code == 403
    assert not Tenant.objects.filter(name="sneaky").exists()
    assert not Plan.objects.filter(name="sneaky").exists()
    assert AuditEvent.objects.count() == 0


def test_home_shows_only_the_panels_of_the_operators_areas() -> None:
    html = operator("fleet-only", "fleet").get("/console/").content.decode()
    assert "Hives not online" in html and "Models waiting for approval" in html
    assert "Tenants past due" not in html and "GDPR deadlines" not in html
    html = operator("money", "tenants").get("/console/").content.decode()
    assert "Tenants past due" in html and "Hives not online" not in html
    assert "Audit log verification" not in html


def test_home_lists_past_due_tenants() -> None:
    t = tenant_create(name="late-payer")
    Tenant.objects.filter(pk=t.pk).update(status="past_due")
    html = operator("money", "tenants").get("/console/").content.decode()
    assert 'href="/console/tenants/late-payer"' in html


# Tenants -------------------------------------------------------------------------------


def test_create_a_tenant_is_audited_with_the_operator_as_actor(plans: None) -> None:
    client = operator("ops", "tenants")
    response = client.post("/console/tenants/new", {"name": "acme", "plan": "pro"})
    assert response.status_code == 302 and response["Location"] == "/console/tenants/acme"
    tenant = Tenant.objects.get(name="acme")
    assert tenant.plan is not None and tenant.plan.name == "pro"
    (event,) = events("tenant.create")
    assert event.tenant_id == tenant.pk and actor_of(event) == "user:ops@example.com"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "Not Valid"}, "invalid tenant name"),
        ({"name": "acme2", "plan": "gold"}, "no plan named"),
        ({"name": "acme3", "data_region": "Mars Base!"}, "not a region"),
    ],
)
def test_invalid_tenant_input_is_a_400_that_says_why(
    plans: None, data: dict[str, str], message: str
) -> None:
    response = operator("ops", "tenants").post("/console/tenants/new", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Tenant.objects.count() == 0 and AuditEvent.objects.count() == 0


def test_a_duplicate_tenant_is_a_400() -> None:
    tenant_create(name="acme")
    response = operator("ops", "tenants").post("/console/tenants/new", {"name": "acme"})
    assert response.status_code == 400 and "already exists" in response.content.decode()


def test_the_list_searches_and_pages(plans: None) -> None:
    for i in range(30):
        tenant_create(name=f"t{i:02d}")
    tenant_create(name="zeta", plan="pro")
    client = operator("ops", "tenants")
    html = client.get("/console/tenants?q=zeta").content.decode()
    assert 'href="/console/tenants/zeta"' in html and "/console/tenants/t01" not in html
    first = client.get("/console/tenants").content.decode()
    second = client.get("/console/tenants?page=2").content.decode()
    assert "/console/tenants/t00" in first and "/console/tenants/t29" not in first
    assert "/console/tenants/t29" in second and "Page 2 of 2" in second
    assert client.get("/console/tenants?page=99").status_code == 200


def test_plan_status_overrides_and_residency_change_through_the_services(plans: None) -> None:
    tenant = tenant_create(name="acme", plan="free")
    client = operator("ops", "tenants")
    base = "/console/tenants/acme"
    assert client.post(f"{base}/plan", {"plan": "pro"})["Location"] == base
    assert client.post(f"{base}/status", {"status": "suspended"}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.plan is not None and tenant.plan.name == "pro" and tenant.status == "suspended"
    assert client.post(f"{base}/status", {"status": "active"}).status_code == 302
    response = client.post(
        f"{base}/overrides", {"requests_per_day": "5", "max_concurrent": "unlimited"}
    )
    assert response.status_code == 302
    assert client.post(f"{base}/residency", {"data_region": "eu", "jurisdiction": "de"})
    tenant.refresh_from_db()
    assert tenant.status == "active"
    assert tenant.overrides == {"requests_per_day": 5, "max_concurrent": None}
    assert (tenant.data_region, tenant.jurisdiction) == ("eu", "DE")
    (plan_event,) = events("tenant.plan")
    assert json.loads(plan_event.data) == {"from": "free", "to": "pro"}
    assert actor_of(plan_event) == "user:ops@example.com"
    assert len(events("tenant.suspend")) == len(events("tenant.reactivate")) == 1
    assert json.loads(events("tenant.overrides")[0].data)["set"] == {
        "requests_per_day": 5,
        "max_concurrent": None,
    }
    assert len(events("tenant.residency")) == 1


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("plan", {"plan": "gold"}, "no plan named"),
        ("status", {"status": "deleted"}, "status:"),
        ("overrides", {"requests_per_day": "-1"}, "requests_per_day"),
        ("overrides", {"requests_per_day": "lots"}, "A valid integer is required"),
        ("residency", {"data_region": "x" * 40}, "data_region"),
        ("residency", {"jurisdiction": "1"}, "not a country code"),
    ],
)
def test_invalid_changes_are_a_400_and_change_nothing(
    plans: None, path: str, data: dict[str, str], message: str
) -> None:
    tenant = tenant_create(name="acme", plan="free")
    before = AuditEvent.objects.count()
    response = operator("ops", "tenants").post(f"/console/tenants/acme/{path}", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    after = Tenant.objects.get(pk=tenant.pk)
    assert (after.plan_id, after.status, after.overrides, after.data_region) == (
        tenant.plan_id,
        "active",
        {},
        "",
    )
    assert AuditEvent.objects.count() == before


def test_an_unknown_tenant_is_a_404() -> None:
    client = operator("ops", "tenants")
    assert client.get("/console/tenants/nobody").status_code == 404
    assert client.post("/console/tenants/nobody/status", {"status": "suspended"}).status_code == 404


def test_the_detail_shows_keys_by_prefix_never_a_secret(plans: None) -> None:
    tenant = tenant_create(name="acme", plan="free")
    key, plaintext = api_key_create(tenant=tenant, name="ci key", scopes={"endpoints": ["chat"]})
    html = operator("ops", "tenants").get("/console/tenants/acme").content.decode()
    assert key.display in html and "ci key" in html and "endpoints: chat" in html
    assert plaintext not in html and key.key_hash not in html
    # The secret after the prefix (it may itself hold "-": token_urlsafe's alphabet).
    secret = plaintext.split(f"-{key.prefix}-", 1)[1]
    assert len(secret) >= 20 and secret not in html


def test_revoking_a_key_through_another_tenants_url_is_a_404() -> None:
    acme, other = tenant_create(name="acme"), tenant_create(name="other")
    key, _ = api_key_create(tenant=other, name="theirs")
    client = operator("ops", "tenants")
    assert client.post(f"/console/tenants/acme/keys/{key.pk}/revoke").status_code == 404
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    response = client.post(f"/console/tenants/other/keys/{key.pk}/revoke")
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    (event,) = events("key.revoke")
    assert event.tenant_id == other.pk and json.loads(event.data)["prefix"] == key.prefix
    assert acme.pk != other.pk


def test_usage_month_must_be_a_month() -> None:
    tenant_create(name="acme")
    client = operator("ops", "tenants")
    assert client.get("/console/tenants/acme?month=2026-02").status_code == 200
    response = client.get("/console/tenants/acme?month=february")
    assert response.status_code == 400 and "use YYYY-MM" in response.content.decode()


def test_every_console_form_carries_a_csrf_token(plans: None) -> None:
    tenant_create(name="acme")
    user = User.objects.create_user("ops", "ops@example.com", PW)
    user.user_permissions.add(Permission.objects.get(codename="operate_tenants"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/console/tenants/acme/status", {"status": "suspended"}).status_code == 403
    assert Tenant.objects.get(name="acme").status == "active"
    html = client.get("/console/tenants/acme").content.decode()
    forms = re.findall(r"<form method=\"post\".*?</form>", html, re.S)
    assert forms and all("csrfmiddlewaretoken" in f for f in forms)


# Plans ---------------------------------------------------------------------------------


def test_plans_are_created_and_edited_like_the_api_and_audited() -> None:
    client = operator("ops", "tenants")
    response = client.post(
        "/console/plans/new",
        {
            "name": "team",
            "queue_weight": "3",
            "max_priority": "batch",
            "requests_per_day": "500",
            "tokens_per_day": "",
            "allowed_models": "m1, m2",
        },
    )
    assert response.status_code == 302
    plan = Plan.objects.get(name="team")
    assert (plan.queue_weight, plan.max_priority, plan.requests_per_day) == (3, "batch", 500)
    assert plan.tokens_per_day is None and plan.allowed_models == ["m1", "m2"]
    response = client.post(
        "/console/plans/team/edit", {"requests_per_day": "", "queue_weight": "7"}
    )
    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.requests_per_day is None and plan.queue_weight == 7
    created, edited = events("plan.set")
    assert json.loads(created.data)["created"] is True
    assert json.loads(edited.data)["queue_weight"] == 7
    assert actor_of(edited) == "user:ops@example.com"
    assert "team" in client.get("/console/plans").content.decode()


@pytest.mark.parametrize(
    ("url", "data", "message"),
    [
        ("/console/plans/new", {"name": "x", "queue_weight": "0"}, "queue_weight"),
        ("/console/plans/new", {"name": "x", "max_priority": "urgent"}, "max_priority"),
        ("/console/plans/pro/edit", {"name": "renamed"}, "cannot be renamed"),
        ("/console/plans/pro/edit", {"requests_per_day": "-5"}, "requests_per_day"),
    ],
)
def test_invalid_plans_are_a_400(plans: None, url: str, data: dict[str, str], message: str) -> None:
    response = operator("ops", "tenants").post(url, data)
    assert response.status_code == 400 and message in response.content.decode()
    assert set(Plan.objects.values_list("name", flat=True)) == {"free", "pro"}
    assert Plan.objects.get(name="pro").requests_per_day == 10_000
    assert events("plan.set") == []


# Keys ----------------------------------------------------------------------------------


def test_keys_are_found_by_prefix_across_tenants_and_revoked() -> None:
    a, b = tenant_create(name="acme"), tenant_create(name="bravo")
    ka, plain_a = api_key_create(tenant=a, name="a")
    kb, plain_b = api_key_create(tenant=b, name="b")
    client = operator("ops", "tenants")
    html = client.get(f"/console/keys?q={plain_a}").content.decode()  # a whole key pasted
    assert ka.display in html and kb.display not in html
    assert plain_a not in html
    html = client.get("/console/keys").content.decode()
    assert ka.display in html and kb.display in html and plain_b not in html
    assert client.post(f"/console/keys/{kb.pk}/revoke").status_code == 302
    assert ApiKey.objects.get(pk=kb.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=ka.pk).revoked_at is None
    assert [e.tenant_id for e in events("key.revoke")] == [b.pk]
    html = client.get("/console/keys?state=active").content.decode()
    assert f'<td class="mono">{ka.display}</td>' in html
    assert f'<td class="mono">{kb.display}</td>' not in html
    assert client.post("/console/keys/999999/revoke").status_code == 404


# Invoices ------------------------------------------------------------------------------


def test_invoices_are_read_by_audit_and_rebuilt_only_by_tenants() -> None:
    from datetime import date

    tenant = tenant_create(name="acme")
    invoice = Invoice.objects.create(
        tenant=tenant,
        period_start=date(2026, 1, 1),
        period_end=date(2026, 1, 31),
        lines=[
            {
                "model": "m1",
                "unit": "prompt_tokens",
                "quantity": "10",
                "unit_price": "0.5",
                "amount": "5",
            }
        ],
        total=5,
    )
    auditor = operator("auditor", "audit")
    html = auditor.get("/console/invoices?tenant=acme&month=2026-01").content.decode()
    assert f'href="/console/invoices/{invoice.pk}"' in html
    html = auditor.get("/console/invoices?month=2026-02").content.decode()
    assert f'href="/console/invoices/{invoice.pk}"' not in html
    detail = auditor.get(f"/console/invoices/{invoice.pk}").content.decode()
    assert "m1" in detail and "Stripe sync" in detail and "Rebuild draft" not in detail
    assert auditor.post(f"/console/invoices/{invoice.pk}/rebuild").status_code == 403
    assert operator("fleet-only", "fleet").get("/console/invoices").status_code == 403
    assert auditor.get("/console/invoices?month=13").status_code == 400
    ops = operator("ops", "tenants")
    assert "Rebuild draft" in ops.get(f"/console/invoices/{invoice.pk}").content.decode()
    assert ops.post(f"/console/invoices/{invoice.pk}/rebuild").status_code == 302
    invoice.refresh_from_db()
    assert invoice.lines == [] and invoice.total == 0  # no usage recorded in January


def test_prices_are_set_and_changed_and_audited(plans: None) -> None:
    from decimal import Decimal

    from billing.models import Price

    client = operator("ops", "tenants")
    form = {"model": "m1", "unit": "prompt_tokens", "unit_price": "0.0000005", "currency": "USD"}
    assert client.post("/console/prices", form).status_code == 302
    assert client.post("/console/prices", {**form, "plan": "pro", "unit_price": "0.25"})
    assert client.post("/console/prices", {**form, "unit_price": "0.000001"}).status_code == 302
    rows = {
        (p.plan.name if p.plan else None): (p.unit_price, p.currency)
        for p in Price.objects.select_related("plan")
    }
    assert rows == {None: (Decimal("0.000001"), "usd"), "pro": (Decimal("0.25"), "usd")}
    first, pro, changed = events("price.set")
    assert json.loads(first.data)["created"] is True and json.loads(pro.data)["plan"] == "pro"
    assert json.loads(changed.data)["from"] == {"unit_price": "0.0000005", "currency": "usd"}
    assert actor_of(changed) == "user:ops@example.com"
    html = client.get("/console/plans").content.decode()
    assert "0.000001" in html and "0.25" in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": "m1", "unit": "tokens", "unit_price": "1"}, "unknown unit"),
        ({"model": "m1", "unit": "images", "unit_price": "-1"}, "a unit price is from 0"),
        ({"model": "m1", "unit": "images", "unit_price": "cheap"}, "not a price"),
        ({"model": "m1", "unit": "images", "unit_price": "1e-13"}, "at most 12 decimal places"),
        ({"model": "", "unit": "images", "unit_price": "1"}, "name a model"),
        ({"model": "m1", "unit": "images", "unit_price": "1", "plan": "gold"}, "no plan named"),
        ({"model": "m1", "unit": "images", "unit_price": "1", "currency": "€"}, "currency"),
    ],
)
def test_invalid_prices_are_a_400_and_change_nothing(
    plans: None, data: dict[str, str], message: str
) -> None:
    from billing.models import Price

    response = operator("ops", "tenants").post("/console/prices", data)
    assert response.status_code == 400 and message in response.content.decode()
    assert Price.objects.count() == 0 and events("price.set") == []
    assert operator("fleet-only", "fleet").post("/console/prices", data).status_code == 403
