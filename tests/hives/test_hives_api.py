"""The operators' API for models on hives and their workers."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from hives.models import CatalogModel, Hive, Worker, WorkerCommand
from hives.services import assignments_to_send, hive_token_create, model_alias_set
from tests.inference.test_management_api import basic

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> dict[str, str]:
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests")
    return basic("ops", "pw-for-tests")


@pytest.fixture
def hive() -> Hive:
    h, _ = hive_token_create(name="gpu-1")
    h.devices = [{"kind": "cuda", "index": 0, "gpu_type": "RTX4090"}]
    h.save()
    return h


def test_staff_only(hive: Hive) -> None:
    c = Client()
    for url in ("/api/models", "/api/workers"):
        assert c.get(url).status_code in (401, 403)
    User.objects.create_user("user", "u@example.com", "pw")
    assert c.get("/api/workers", **basic("user", "pw")).status_code == 403


def test_models_assign_list_and_remove(staff: dict[str, str], hive: Hive) -> None:
    c = Client()
    r = c.post(
        "/api/models",
        {"spec": "tiny-sd", "hive": "gpu-1", "device": "0", "pinned": True},
        content_type="application/json",
        **staff,
    )
    assert r.status_code == 201, r.content
    assert r.json() == {"model": "tiny-sd", "hive": "gpu-1", "device": "cuda:0", "pinned": True}
    bad = c.post(
        "/api/models", {"spec": "x", "hive": "nope"}, content_type="application/json", **staff
    )
    assert bad.status_code == 400 and "no hive" in bad.json()["error"]["message"]
    bad = c.post(
        "/api/models",
        {"spec": "x", "hive": "gpu-1", "device": "tpu:9"},
        content_type="application/json",
        **staff,
    )
    assert bad.status_code == 400 and "bad device" in bad.json()["error"]["message"]

    model = CatalogModel.objects.create(name="tiny-sd", capability="image-gen", engine="diffusers")
    model_alias_set(alias="dall-e-2", target="tiny-sd")
    Worker.objects.create(hive=hive, model=model, device="cuda:0", state="ready", pinned=True)
    listed = c.get("/api/models", **staff).json()["data"]
    (entry,) = [m for m in listed if m["name"] == "tiny-sd"]
    assert entry["aliases"] == ["dall-e-2"]
    assert entry["assignments"][0]["device"] == "cuda:0"
    assert entry["workers"][0]["state"] == "ready"

    assert c.delete("/api/models/tiny-sd?hive=gpu-1", **staff).status_code == 204
    assert c.delete("/api/models/tiny-sd?hive=gpu-1", **staff).status_code == 404
    assert c.delete("/api/models/tiny-sd", **staff).status_code == 400


def test_worker_actions_reach_the_hive_once(staff: dict[str, str], hive: Hive) -> None:
    c = Client()
    model = CatalogModel.objects.create(name="m", capability="text-gen", engine="llama.cpp")
    w = Worker.objects.create(hive=hive, model=model, device="cpu", state="ready")
    assert c.get("/api/workers", **staff).json()["data"][0]["model"] == "m"
    r = c.post(f"/api/workers/{w.pk}/restart", **staff)
    assert r.status_code == 202, r.content
    assert c.post(f"/api/workers/{w.pk}/explode", **staff).status_code == 400
    assert c.post("/api/workers/999999/stop", **staff).status_code == 404
    workers = [{"model": "m", "device": "cpu"}]
    orders = assignments_to_send(hive_id=hive.pk, workers=workers)
    assert {"op": "worker", "action": "restart", "model": "m", "device": "cpu"} in orders
    # Sent once: the next heartbeat carries no order.
    assert not [
        o for o in assignments_to_send(hive_id=hive.pk, workers=workers) if o["op"] == "worker"
    ]
    assert WorkerCommand.objects.get().sent_at is not None


def test_downloads_are_queued_for_the_hive(staff: dict[str, str], hive: Hive) -> None:
    c = Client()
    r = c.post(
        "/api/downloads",
        {"source": "acme/tiny", "hive": "gpu-1"},
        content_type="application/json",
        **staff,
    )
    assert r.status_code == 202, r.content
    row = r.json()
    assert row["status"] == "queued" and row["hive"] == "gpu-1"
    orders = assignments_to_send(hive_id=hive.pk, workers=[])
    assert {"op": "download", "id": row["id"], "source": "acme/tiny"} in orders
    from hives.services import model_download_progress

    model_download_progress(
        hive_id=hive.pk, report={"id": row["id"], "state": "running", "done": 5, "total": 10}
    )
    got = c.get(f"/api/downloads/{row['id']}", **staff).json()
    assert (got["status"], got["done_bytes"], got["total_bytes"]) == ("running", 5, 10)
    # Another hive cannot report on it.
    other, _ = hive_token_create(name="gpu-2")
    model_download_progress(hive_id=other.pk, report={"id": row["id"], "state": "failed"})
    assert c.get(f"/api/downloads/{row['id']}", **staff).json()["status"] == "running"
    assert c.get("/api/downloads/99999", **staff).status_code == 404
    bad = c.post(
        "/api/downloads",
        {"source": "x/y", "hive": "nope"},
        content_type="application/json",
        **staff,
    )
    assert bad.status_code == 400


def test_hives_are_operator_data_over_the_api(staff: dict[str, str], hive: Hive) -> None:
    from hives.models import ModelApproval

    c = Client()
    assert c.get("/api/hives").status_code in (401, 403)
    ModelApproval.objects.create(hive=hive, model_name="claimed", engine="echo", reason="r")
    r = c.get("/api/hives", **staff)
    assert r.status_code == 200
    (row,) = r.json()["data"]
    assert (row["name"], row["region"], row["disabled"], row["revoked"]) == (
        "gpu-1",
        "",
        False,
        False,
    )
    assert [p["model"] for p in row["pending_models"]] == ["claimed"]

    r = c.patch(
        "/api/hives/gpu-1",
        {"region": "eu", "trust_models": True, "disabled": True},
        content_type="application/json",
        **staff,
    )
    assert r.status_code == 200, r.content
    hive.refresh_from_db()
    assert (hive.region, hive.trust_models, hive.disabled) == ("eu", True, True)
    for body in ({"region": "eu\r\nX: 1"}, {"region": "x" * 40}, {"disabled": "maybe"}):
        bad = c.patch("/api/hives/gpu-1", body, content_type="application/json", **staff)
        assert bad.status_code == 400, bad.content
        assert bad.json()["error"]["message"]
    missing = c.patch("/api/hives/nope", {}, content_type="application/json", **staff)
    assert missing.status_code == 400 and "no hive named" in missing.json()["error"]["message"]

    r = c.post(
        "/api/hives/gpu-1/approve", {"model": "claimed"}, content_type="application/json", **staff
    )
    assert r.status_code == 200 and r.json() == {
        "hive": "gpu-1",
        "model": "claimed",
        "approved": True,
    }
    assert ModelApproval.objects.get(hive=hive, model_name="claimed").approved
    model_alias_set(alias="gpt-4o", target="real", capability="text-gen", engine="echo")
    bad = c.post(
        "/api/hives/gpu-1/approve", {"model": "gpt-4o"}, content_type="application/json", **staff
    )
    assert bad.status_code == 400 and "alias" in bad.json()["error"]["message"]

    r = c.post("/api/hives/gpu-1/revoke", **staff)
    assert r.status_code == 200 and r.json()["revoked"] is True
    hive.refresh_from_db()
    assert hive.token_revoked
