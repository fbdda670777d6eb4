from __future__ import annotations

import pytest

from kernel import secrets
from tenants.errors import TenantError, TenantErrorCode
from tenants.models import ApiKey, Tenant
from tenants.selectors import KeyRejected, caller_from_key
from tenants.services import api_key_create, api_key_revoke, tenant_create

pytestmark = pytest.mark.django_db


def test_a_key_is_shown_once_and_only_its_hash_is_stored() -> None:
    t = tenant_create(name="acme", tier="pro")
    key, plaintext = api_key_create(tenant=t, name="ci")
    assert plaintext.startswith("sk-rbee-")
    row = ApiKey.objects.get(pk=key.pk)
    assert plaintext not in (row.key_hash, row.prefix, row.name)
    assert row.key_hash == secrets.digest(plaintext)
    assert len(row.prefix) == secrets.PREFIX_LEN and row.prefix in plaintext
    caller = caller_from_key(plaintext)
    assert (caller.tenant_name, caller.tier, caller.api_key_id) == ("acme", "pro", key.pk)


def test_each_key_is_different() -> None:
    t = tenant_create(name="acme")
    keys = {api_key_create(tenant=t)[1] for _ in range(20)}
    assert len(keys) == 20


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda k: "", "malformed"),
        (lambda k: "hello", "malformed"),
        (lambda k: k.replace("sk-rbee-", "sk-"), "malformed"),
        (lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), "unknown"),
        (lambda k: "sk-rbee-zzzzzzzzzz-" + "Q" * 40, "unknown"),
    ],
)
def test_bad_keys_are_rejected(mangle, reason) -> None:  # type: ignore[no-untyped-def]
    t = tenant_create(name="acme")
    _, plaintext = api_key_create(tenant=t)
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(mangle(plaintext))
    assert exc.value.reason == reason


def test_revoked_key_and_suspended_tenant_are_rejected() -> None:
    t = tenant_create(name="acme")
    key, plaintext = api_key_create(tenant=t)
    _, other = api_key_create(tenant=t)
    api_key_revoke(api_key=key)
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(plaintext)
    assert exc.value.reason == "revoked"
    assert caller_from_key(other).tenant_name == "acme"
    Tenant.objects.filter(pk=t.pk).update(status=Tenant.Status.SUSPENDED)
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(other)
    assert exc.value.reason == "suspended"


def test_tenant_names_are_slugs_and_unique() -> None:
    tenant_create(name="acme")
    with pytest.raises(TenantError) as exc:
        tenant_create(name="acme")
    assert exc.value.code == TenantErrorCode.ALREADY_EXISTS
    with pytest.raises(TenantError) as exc:
        tenant_create(name="Not A Slug")
    assert exc.value.code == TenantErrorCode.INVALID
    assert Tenant.objects.count() == 1


def test_secret_helpers() -> None:
    new = secrets.make("rbee-hive")
    assert secrets.parse_prefix("rbee-hive", new.plaintext) == new.prefix
    assert secrets.parse_prefix("sk-rbee", new.plaintext) is None
    assert secrets.matches(new.plaintext, new.digest)
    assert not secrets.matches(new.plaintext + "x", new.digest)


def test_logs_redact_keys_and_tokens() -> None:
    import logging

    from kernel.logs import RedactSecrets, redact

    key = secrets.make("sk-rbee").plaintext
    tok = secrets.make("rbee-hive").plaintext
    assert redact(f"Authorization: Bearer {key}") == (
        f"Authorization: Bearer sk-rbee-{key.split('-')[2]}-[redacted]"
    )
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "header %s", (tok,), None)
    assert RedactSecrets().filter(record)
    assert tok not in record.getMessage()
    assert "[redacted]" in record.getMessage()


def test_healthz_inventory_is_for_local_callers_and_operators_keys() -> None:
    from django.test import RequestFactory

    from rbee.views import _health

    t = tenant_create(name="acme")
    _, key = api_key_create(tenant=t)
    rf = RequestFactory()
    remote = rf.get("/healthz", REMOTE_ADDR="203.0.113.5")
    assert _health(remote) == {"status": "ok"}
    bad = rf.get("/healthz", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer sk-rbee-x")
    assert _health(bad) == {"status": "ok"}
    keyed = rf.get("/healthz", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert _health(keyed) == {"status": "ok"}  # a tenant's key learns no hive names
    _, op_key = api_key_create(tenant=t, scopes={"operator": True})
    operator = rf.get("/healthz", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION=f"Bearer {op_key}")
    assert _health(operator) == {"status": "ok", "hives": []}
    local = rf.get("/healthz", REMOTE_ADDR="127.0.0.1")
    assert _health(local) == {"status": "ok", "hives": []}
