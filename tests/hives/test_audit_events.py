"""The fleet's security-relevant changes are audit events (gdpr/actions.py): hive
tokens, revocation, trust, region, disable/enable, connections and refusals; models
added, pinned, removed, approved, aliased, downloaded; worker orders. One event per
change, in its transaction, naming the operator (a person over the management API,
"cli:<user>" from the CLI, "hive:<name>" for a hive's own connection); the event's
region is the hive's operator-set one; no hive token in the clear."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from gdpr.actions import AuditAction as A
from hives.models import CatalogModel, Hive, Worker
from hives.protocol import PROTOCOL_VERSION
from hives.services import (
    hive_token_create,
    hive_update,
    model_alias_remove,
    model_alias_set,
)
from tests.audit_events import (
    actions,
    assert_not_in_clear,
    audit_home,  # noqa: F401 (the fixture, used by name)
    events,
    one,
)

pytestmark = [pytest.mark.usefixtures("audit_home")]

OPS = "user:ops@rbee.example"
PASSWORD = "pw-for-tests-Hk2"


@pytest.fixture
def ops() -> Client:
    User.objects.create_superuser("ops", "ops@rbee.example", PASSWORD)
    c = Client()
    c.login(username="ops", password=PASSWORD)
    return c


def _call(c: Client, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    r = getattr(c, method)(url, json.dumps(body or {}), content_type="application/json")
    assert r.status_code < 300, r.content
    return r


@pytest.mark.django_db
def test_tokens_and_operator_edits_of_a_hive(ops: Client) -> None:
    _, token = hive_token_create(name="gpu-1", actor="cli:root")
    _, token2 = hive_token_create(name="gpu-1", region="eu", actor="cli:root")
    first, second = events(A.HIVE_TOKEN)
    assert (first["actor"], first["data"]["hive"], first["data"]["created"]) == (
        "cli:root", "gpu-1", True,
    )  # fmt: skip
    assert (second["data"]["created"], second["region"]) == (False, "eu")
    assert second["data"]["token_prefix"] == Hive.objects.get(name="gpu-1").token_prefix

    _call(ops, "patch", "/api/hives/gpu-1", {"region": "us", "trust_models": True})
    _call(ops, "patch", "/api/hives/gpu-1", {"disabled": True})
    _call(ops, "patch", "/api/hives/gpu-1", {"disabled": False, "region": "us"})  # region same
    _call(ops, "post", "/api/hives/gpu-1/revoke")
    region, trust = one(A.HIVE_REGION), one(A.HIVE_TRUST)
    disable, enable, revoke = one(A.HIVE_DISABLE), one(A.HIVE_ENABLE), one(A.HIVE_REVOKE)
    for ev in (region, trust, disable, enable, revoke):
        assert (ev["actor"], ev["tenant_id"], ev["data"]["hive"], ev["region"]) == (
            OPS, None, "gpu-1", "us",
        )  # fmt: skip
    assert (region["data"]["from"], region["data"]["to"]) == ("eu", "us")
    assert trust["data"]["trust_models"] is True
    assert_not_in_clear(token, token2, Hive.objects.get(name="gpu-1").token_hash, PASSWORD)


@pytest.mark.django_db
def test_models_add_pin_remove_approve_alias_download(ops: Client) -> None:
    hive_token_create(name="gpu-1", region="eu")
    body = {"spec": "tiny-sd", "hive": "gpu-1", "device": "cpu"}
    _call(ops, "post", "/api/models", body)
    _call(ops, "post", "/api/models", body)  # asked again: nothing changed, nothing recorded
    _call(ops, "post", "/api/models", {**body, "pinned": True})
    _call(ops, "post", "/api/models", {**body, "pinned": False})
    _call(ops, "delete", "/api/models/tiny-sd?hive=gpu-1")
    _call(ops, "post", "/api/hives/gpu-1/approve", {"model": "claimed"})
    _call(ops, "post", "/api/hives/gpu-1/approve", {"model": "claimed", "approved": False})
    _call(ops, "post", "/api/downloads", {"source": "org/model", "hive": "gpu-1"})
    _call(ops, "post", "/api/downloads", {"source": "org/model", "hive": "gpu-1"})  # the same
    model = CatalogModel.objects.create(name="tiny-sd", capability="image-gen", engine="x")
    worker = Worker.objects.create(
        hive=Hive.objects.get(name="gpu-1"), model=model, device="cpu", state="ready"
    )
    _call(ops, "post", f"/api/workers/{worker.pk}/restart")
    model_alias_set(alias="dall-e-2", target="tiny-sd", actor="cli:root")
    model_alias_set(alias="dall-e-2", target="tiny-sd", actor="cli:root")  # unchanged
    assert model_alias_remove(alias="dall-e-2", actor="cli:root") == 1
    assert model_alias_remove(alias="dall-e-2", actor="cli:root") == 0

    fleet = [a for a in actions() if a.startswith(("model.", "worker."))]
    assert fleet == [
        "model.add", "model.pin", "model.unpin", "model.remove", "model.approve",
        "model.withdraw", "model.download", "worker.command", "model.alias", "model.unalias",
    ]  # fmt: skip
    add = one(A.MODEL_ADD)
    assert (add["actor"], add["region"], add["data"]["model"], add["data"]["device"]) == (
        OPS, "eu", "tiny-sd", "cpu",
    )  # fmt: skip
    assert one(A.MODEL_PIN)["data"]["pinned"] is True
    assert one(A.MODEL_APPROVE)["data"]["model"] == "claimed"
    assert one(A.WORKER_COMMAND)["data"]["action"] == "restart"
    alias = one(A.MODEL_ALIAS)
    assert (alias["actor"], alias["data"]) == (
        "cli:root",
        {"alias": "dall-e-2", "model": "tiny-sd"},
    )


@pytest.mark.django_db
def test_a_rolled_back_or_refused_fleet_change_leaves_no_event() -> None:
    hive_token_create(name="gpu-1")
    before = actions()

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        hive_update(name="gpu-1", disabled=True, region="eu", actor="cli:root")
        raise Undo
    with pytest.raises(Exception, match="invalid region"):
        hive_update(name="gpu-1", trust_models=True, region="not a region!", actor="cli:root")
    assert actions() == before
    assert Hive.objects.get(name="gpu-1").disabled is False


HELLO = {
    "op": "hello",
    "protocol": PROTOCOL_VERSION,
    "name": "h1",
    "version": "test",
    "region": "us",
    "devices": [{"index": 0, "kind": "cpu", "gpu_type": "CPU"}],
    "workers": [],
}


async def _connect(token: str) -> WebsocketCommunicator:
    from rbee.asgi import application

    comm = WebsocketCommunicator(
        application, "/hive/ws", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await comm.connect()
    assert connected
    return comm


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_connections_disconnections_and_refusals() -> None:
    _, token = await database_sync_to_async(hive_token_create)(
        name="h1", region="eu", trust_models=True
    )
    comm = await _connect(token)
    await comm.send_to(text_data=json.dumps(HELLO))
    assert json.loads(await comm.receive_from(timeout=5))["op"] == "welcome"
    await comm.disconnect()

    bad = await _connect("rbh-not-a-token")
    assert json.loads(await bad.receive_from(timeout=5))["op"] == "refused"
    await bad.disconnect()

    def check() -> None:
        up, down = one(A.HIVE_CONNECT), one(A.HIVE_DISCONNECT)
        for ev in (up, down):
            assert (ev["actor"], ev["region"], ev["data"]["hive"]) == ("hive:h1", "eu", "h1")
        # What the hive says of its region is recorded beside the operator's.
        assert (up["data"]["reported_region"], up["data"]["replaced"]) == ("us", False)
        refused = one(A.HIVE_REFUSED)
        assert (refused["actor"], refused["outcome"], refused["data"]["reason"]) == (
            "anonymous", "denied", "invalid token",
        )  # fmt: skip
        assert_not_in_clear(token, "rbh-not-a-token")

    await database_sync_to_async(check)()
