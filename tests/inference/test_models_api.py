"""GET /v1/models (inference/models_api.py): a tenant sees only the models its plan and
its key's scopes let it use, and nothing of where they run (hives, devices, placements);
a model it may not use is a 404 like one that does not exist. An operator's key (scope
`operator`, made by `rbee key create --operator`) also sees the hives."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from hives.models import CatalogModel, Hive, ModelAlias, Worker
from tenants.services import api_key_create, plan_set, tenant_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served() -> None:
    hive = Hive.objects.create(
        name="secret-hive",
        token_prefix="tp1",
        token_hash="x",
        status=Hive.Status.ONLINE,
        channel_name="specific.hive!1",
        last_seen_at=timezone.now(),
        devices=[{"kind": "cuda", "index": 0, "gpu_type": "RTX4090"}],
    )
    for name, capability in (
        ("chat-a", "text-gen"),
        ("chat-b", "text-gen"),
        ("embed-c", "embedding"),
    ):
        model = CatalogModel.objects.create(name=name, capability=capability, engine="echo")
        Worker.objects.create(hive=hive, model=model, device="cuda:0", state="ready")
    ModelAlias.objects.create(name="alias-of-b", model=CatalogModel.objects.get(name="chat-b"))


def key(scopes: dict[str, Any] | None = None, plan_models: list[str] | None = None) -> str:
    plan = None
    if plan_models is not None:
        plan, _ = plan_set(name="small", limits={}, allowed_models=plan_models)
    tenant = tenant_create(name=f"t{abs(hash(str(scopes) + str(plan_models))) % 10**8}")
    if plan is not None:
        tenant.plan = plan
        tenant.save()
    return api_key_create(tenant=tenant, scopes=scopes)[1]


def listed(k: str) -> list[dict[str, Any]]:
    r = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {k}")
    assert r.status_code == 200, r.content
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_a_tenant_sees_what_its_plan_allows_and_not_where_it_runs(served: None) -> None:
    k = key(plan_models=["chat-a", "embed-c"])
    data = listed(k)
    assert [m["id"] for m in data] == ["chat-a", "embed-c"]
    for m in data:
        assert "hives" not in m and "placements" not in m
        assert "secret-hive" not in str(m) and "cuda" not in str(m) and "RTX" not in str(m)
    c = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {k}"}
    assert c.get("/v1/models/chat-a", **auth).status_code == 200
    hidden = c.get("/v1/models/chat-b", **auth)
    absent = c.get("/v1/models/no-such-model", **auth)
    assert (hidden.status_code, absent.status_code) == (404, 404)
    assert hidden.json()["error"]["code"] == absent.json()["error"]["code"] == "model_not_found"


def test_an_alias_in_the_plan_shows_its_model(served: None) -> None:
    assert [m["id"] for m in listed(key(plan_models=["alias-of-b"]))] == ["chat-b"]


def test_the_keys_scopes_narrow_the_list(served: None) -> None:
    assert [m["id"] for m in listed(key(scopes={"endpoints": ["embeddings"]}))] == ["embed-c"]
    assert [m["id"] for m in listed(key(scopes={"models": ["chat-b"]}))] == ["chat-b"]
    both = key(scopes={"endpoints": ["chat"], "models": ["chat-a", "embed-c"]})
    assert [m["id"] for m in listed(both)] == ["chat-a"]


def test_an_operators_key_sees_every_model_and_its_hives(served: None) -> None:
    data = listed(key(scopes={"operator": True}))
    assert [m["id"] for m in data] == ["chat-a", "chat-b", "embed-c"]
    assert all(m["hives"] == ["secret-hive"] for m in data)
    assert all(m["placements"] for m in data)
