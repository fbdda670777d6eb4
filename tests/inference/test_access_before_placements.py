"""A caller that may not use a model hears that (403, the plan's words) before anything
about the model's workers: a 503 'known but no live worker' would tell a tenant whether a
model outside its plan is being served right now."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory

from billing.errors import AdmissionCode
from hives.models import CatalogModel
from inference import chat
from inference.errors import APIError
from inference.pipeline import prepare
from kernel.errors import DomainError
from tenants.services import api_key_create, plan_set, tenant_create

pytestmark = pytest.mark.django_db


def _request(model: str) -> object:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return RequestFactory().post(
        "/v1/chat/completions", data=json.dumps(body), content_type="application/json"
    )


def test_a_model_outside_the_plan_is_refused_before_its_workers_are_looked_at() -> None:
    CatalogModel.objects.create(name="private-llm", capability="text-gen", engine="echo")
    plan_set(name="basic", limits={}, allowed_models=["some-other-model"])
    _, key = api_key_create(tenant=tenant_create(name="acme", plan="basic"))
    with pytest.raises(DomainError) as exc:
        prepare(key, _request("private-llm"), chat.CHAT)  # type: ignore[arg-type]
    assert exc.value.code == AdmissionCode.MODEL_NOT_IN_PLAN
    # A tenant whose plan includes it hears that nothing serves it right now.
    plan_set(name="pro", limits={}, allowed_models=["private-llm"])
    _, pro_key = api_key_create(tenant=tenant_create(name="bigco", plan="pro"))
    with pytest.raises(APIError) as unavailable:
        prepare(pro_key, _request("private-llm"), chat.CHAT)  # type: ignore[arg-type]
    assert unavailable.value.status == 503 and unavailable.value.code == "model_unavailable"
