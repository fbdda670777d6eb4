"""Data regions on tenants and keys: a key narrows, never widens; the caller carries both;
operators set them over the API (tenants' own admins only narrow their keys)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from billing.models import UsageEvent
from billing.selectors import month_bounds, usage_residency
from billing.services import Usage, usage_record
from gdpr import audit, subjects
from gdpr.models import AuditEvent
from tenants.errors import TenantError
from tenants.selectors import caller_from_key
from tenants.services import (
    api_key_create,
    api_key_rotate,
    membership_add,
    operator_create,
    tenant_create,
    tenant_set_residency,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any, tmp_path: Any, monkeypatch: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))  # the audit log's key file
    audit._cache.clear()


def test_a_key_narrows_its_tenants_region_and_never_widens_it() -> None:
    t = tenant_create(name="euco", data_region="EU", jurisdiction="de")
    assert (t.data_region, t.jurisdiction) == ("eu", "DE")
    _, plain = api_key_create(tenant=t)
    assert caller_from_key(plain).data_regions == ("eu",)
    key, narrow = api_key_create(tenant=t, data_region="eu-west")
    c = caller_from_key(narrow)
    assert c.data_regions == ("eu", "eu-west") and c.data_region == "eu-west"
    assert c.may_run_in("eu-west-2") and not c.may_run_in("eu") and not c.may_run_in("us")
    for wider in ("us", "europe", "apac-eu"):
        with pytest.raises(TenantError, match="only narrow"):
            api_key_create(tenant=t, data_region=wider)
    # A rotated key keeps its region.
    _, rotated = api_key_rotate(api_key=key)
    assert caller_from_key(rotated).data_region == "eu-west"


def test_a_tenant_without_a_region_has_keys_of_any_region() -> None:
    t = tenant_create(name="anyco")
    _, plain = api_key_create(tenant=t)
    assert caller_from_key(plain).data_regions == () and caller_from_key(plain).may_run_in("")
    _, us = api_key_create(tenant=t, data_region="us")
    assert caller_from_key(us).data_region == "us" and not caller_from_key(us).may_run_in("eu")


def test_moving_a_tenant_leaves_its_keys_failing_closed() -> None:
    t = tenant_create(name="mover", data_region="eu")
    _, plain = api_key_create(tenant=t, data_region="eu")
    tenant_set_residency(tenant=t, data_region="us")
    c = caller_from_key(plain)
    assert not c.may_run_in("us") and not c.may_run_in("eu") and "none" in c.data_region


@pytest.mark.parametrize(
    "bad", [{"data_region": "EU WEST"}, {"jurisdiction": "DEU"}, {"jurisdiction": "1x"}]
)
def test_bad_regions_and_jurisdictions_are_refused(bad: dict[str, str]) -> None:
    t = tenant_create(name="strict")
    with pytest.raises(TenantError) as err:
        tenant_set_residency(tenant=t, **bad)
    assert err.value.param in ("data_region", "jurisdiction")
    t.refresh_from_db()
    assert (t.data_region, t.jurisdiction) == ("", "")


def _client(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def _patch(c: Client, url: str, body: dict[str, Any]) -> Any:
    return c.patch(url, json.dumps(body), content_type="application/json")


def test_operators_set_the_region_owners_only_narrow_keys() -> None:
    t = tenant_create(name="apico")
    owner = User.objects.create_user("own", "own@apico.example", "pw")
    membership_add(tenant=t, user=owner, role="owner")
    ops = operator_create(username="ops", email="ops@x.example", password="pw", areas=["tenants"])
    url = f"/api/tenants/{t.pk}"

    r = _patch(_client(owner), url, {"data_region": ""})
    assert r.status_code == 403, r.content
    r = _patch(_client(ops), url, {"data_region": "eu", "jurisdiction": "fr"})
    assert r.status_code == 200, r.content
    assert (r.json()["data_region"], r.json()["jurisdiction"]) == ("eu", "FR")
    r = _patch(_client(ops), url, {"data_region": "not a region"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"
    # The change is an audit event, by the operator who made it.
    ev = AuditEvent.objects.get(action="tenant.residency", tenant_id=t.pk)
    assert json.loads(ev.data) == {
        "data_region": {"from": "", "to": "eu"},
        "jurisdiction": {"from": "", "to": "FR"},
    }
    by_ops = audit.events_for_subject(subjects.user("ops@x.example"))
    assert [e["actor"] for e in by_ops if e["action"] == "tenant.residency"] == [
        "user:ops@x.example"
    ]
    # Prompt retention: a setting of the operators', audited too.
    r = _patch(_client(ops), url, {"prompt_retention": "contract", "prompt_retention_days": 7})
    assert r.status_code == 200 and r.json()["prompt_retention"] == "contract"
    assert caller_from_key(api_key_create(tenant=t)[1]).prompt_retention_days == 7
    for bad in ({"prompt_retention": "always"}, {"prompt_retention_days": 365}):
        assert _patch(_client(ops), url, bad).status_code == 400, bad
    assert AuditEvent.objects.filter(action="tenant.prompt_retention").count() == 1

    keys = f"/api/tenants/{t.pk}/keys"
    r = _client(owner).post(
        keys, json.dumps({"data_region": "us"}), content_type="application/json"
    )
    assert r.status_code == 400, r.content
    r = _client(owner).post(
        keys, json.dumps({"data_region": "eu-west"}), content_type="application/json"
    )
    assert r.status_code == 201 and r.json()["data_region"] == "eu-west"
    assert caller_from_key(r.json()["key"]).data_regions == ("eu", "eu-west")


def test_residency_report_counts_per_hive_and_lists_what_ran_outside() -> None:
    t = tenant_create(name="repco", data_region="eu")
    other = tenant_create(name="other")
    for i, (region, worker) in enumerate(
        [("eu", "a/cpu"), ("eu", "a/cuda:0"), ("eu-west", "b/cpu"), ("us", "c/cpu"), ("", "")]
    ):
        usage_record(
            request_id=f"r{i}",
            tenant_id=t.pk,
            api_key_id=None,
            model="m",
            modality="chat",
            usage=Usage(prompt_tokens=1),
            worker=worker,
            region=region,
        )
    usage_record(
        request_id="x",
        tenant_id=other.pk,
        api_key_id=None,
        model="m",
        modality="chat",
        usage=Usage(prompt_tokens=1),
        worker="c/cpu",
        region="us",
    )
    month = datetime.now(UTC).strftime("%Y-%m")
    start, end = month_bounds(month)
    rep = usage_residency(tenant=t, start=start, end=end)
    assert [(r.region, r.hive, r.requests, r.within) for r in rep.rows] == [
        ("eu", "a", 2, True),
        ("eu-west", "b", 1, True),
        ("us", "c", 1, False),
    ]
    assert rep.not_run == 1 and rep.total == 5
    assert [(o[0], o[2], o[3]) for o in rep.outside] == [("r3", "us", "c/cpu")]
    # Another month sees nothing; the other tenant's row never shows.
    old_start, old_end = month_bounds("2001-01")
    assert usage_residency(tenant=t, start=old_start, end=old_end).total == 0
    assert UsageEvent.objects.count() == 6
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_bounds("2026-13")
