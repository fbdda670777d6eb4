"""Schemathesis against the management and portal API's own OpenAPI description
(`GET /api/schema`): every operation, with bodies, query strings and path ids generated
both valid (positive) and invalid (negative), sent as an operator and as a tenant admin.
No answer may be a 500, and every 4xx is the API's own error body."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import schemathesis
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from tenants.models import Membership, Plan, Tenant
from tenants.services import api_key_create, invitation_create

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = 40  # per operation, per mode, per caller
RAN: Counter[str] = Counter()
STATUS: Counter[int] = Counter()


def _schema() -> Any:
    spec = SchemaGenerator().get_schema(request=None, public=True)
    return schemathesis.openapi.from_dict(json.loads(json.dumps(spec, default=str)))


def _operations() -> list[Any]:
    return [r.ok() for r in _schema().get_all_operations()]


def _send(client: Client, case: Any) -> Any:
    kwargs: dict[str, Any] = {}
    if case.headers:
        kwargs.update(
            {f"HTTP_{k.upper().replace('-', '_')}": str(v) for k, v in case.headers.items()}
        )
    path = case.formatted_path
    method = case.method.lower()
    if method in ("get", "delete", "head", "options"):
        return getattr(client, method)(path, data=case.query or {}, **kwargs)
    if case.query:
        from urllib.parse import urlencode

        path += "?" + urlencode(case.query, doseq=True)
    body = case.body
    if body is None or type(body).__name__ == "NotSet":
        return getattr(client, method)(path, **kwargs)
    return getattr(client, method)(
        path, data=json.dumps(body, default=str), content_type="application/json", **kwargs
    )


def _check(case: Any, resp: Any) -> None:
    where = f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r}"
    assert resp.status_code < 500, f"{resp.status_code} for {where}: {resp.content[:500]!r}"
    if resp.status_code >= 400 and resp.get("Content-Type", "").startswith("application/json"):
        err = json.loads(resp.content)["error"]
        assert err["message"] and err["code"], where


@pytest.fixture
def callers() -> dict[str, Client]:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    plan = Plan.objects.create(name="fuzz-plan")
    tenant = Tenant.objects.create(name="fuzz-co", plan=plan)
    operator = User.objects.create_superuser("op", "op@example.com", "pw-op-123456")
    admin = User.objects.create_user("adm", "adm@example.com", "pw-adm-123456")
    member = Membership.objects.create(user=admin, tenant=tenant, role=Membership.Role.OWNER)
    key, _ = api_key_create(tenant=tenant, name="fuzzed")
    invitation, _ = invitation_create(
        tenant=tenant, email="new@example.com", role="member", invited_by=admin
    )
    clients = {}
    for name, user in (("operator", operator), ("tenant-admin", admin)):
        c = Client()
        c.force_login(user)
        clients[name] = c
    # Real ids, so that generated calls reach existing rows, not only 404s.
    clients["ids"] = {  # type: ignore[assignment]
        "tenant_id": tenant.pk,
        "plan_id": plan.pk,
        "key_id": key.pk,
        "membership_id": member.pk,
        "invitation_id": invitation.pk,
    }
    return clients


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_500(callers: dict[str, Any], mode: GenerationMode) -> None:
    RAN.clear()
    STATUS.clear()
    ops = _operations()
    assert len(ops) >= 15, [o.label for o in ops]  # the whole API is described
    ids = callers["ids"]
    for op in ops:
        strategies = [op.as_strategy(generation_mode=mode)]
        real = {name: v for name, v in ids.items() if f"{{{name}}}" in op.path}
        if real:
            strategies.append(op.as_strategy(generation_mode=mode, path_parameters=real))

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies), who=st.sampled_from(["operator", "tenant-admin"]))
        def run(case: Any, who: str) -> None:
            RAN[op.label] += 1
            resp = _send(callers[who], case)
            STATUS[resp.status_code] += 1
            _check(case, resp)

        run()
    total = sum(RAN.values())
    print(f"schemathesis ({mode.value}): {total} cases over {len(RAN)} operations: {STATUS}")
    assert total >= len(ops) * 10
    # The run reached past authentication and validation: some calls succeeded.
    assert sum(n for code, n in STATUS.items() if code < 300) > total // 20, STATUS


def test_the_schema_is_for_operators_only(callers: dict[str, Any]) -> None:
    assert Client().get("/api/schema").status_code in (401, 403)
    assert callers["tenant-admin"].get("/api/schema").status_code == 403
    from tenants.services import operator_create

    bare = operator_create(username="bare", password="pw-bare-123456", areas=[])
    assert bare.is_staff  # staff without any area reads nothing, the schema included
    c = Client()
    c.force_login(bare)
    assert c.get("/api/schema").status_code == 403
    audit = operator_create(username="aud", password="pw-aud-123456", areas=["audit"])
    c.force_login(audit)
    assert c.get("/api/schema").status_code == 200
    resp = callers["operator"].get("/api/schema", HTTP_ACCEPT="application/json")
    assert resp.status_code == 200
    paths = json.loads(resp.content)["paths"]
    assert "/api/tenants/{tenant_id}/keys" in paths and not any(p.startswith("/v1") for p in paths)
