"""Steps 1-4 of a request from what the queen process keeps (inference.pipeline.
_prepare_async): a second request with the same key and model does not go to the database,
and any change to the key, its tenant or plan, or to the fleet (a worker, a hive, a model,
an alias) sends the next one back to it, where it sees the change. Runs on both backends
(the generations are a file's time embedded, Redis counters on PostgreSQL + Redis)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import RequestFactory
from django.utils import timezone

from hives import selectors as hive_selectors
from hives.models import CatalogModel, Hive, ModelAlias, Worker
from hives.services import hive_disconnected
from inference import chat, pipeline
from inference.errors import APIError
from tenants import selectors as tenant_selectors
from tenants.errors import KeyRejected
from tenants.models import ApiKey
from tenants.services import api_key_create, api_key_revoke, tenant_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _own_generations(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counters of this test's own: other test processes on the same Redis (or RBEE_HOME)
    bump the shared ones whenever they create a tenant or a hive."""
    settings.RBEE_GENERATIONS_PREFIX = f"test-{uuid.uuid4().hex[:12]}:gen:"
    monkeypatch.setattr(hive_selectors, "FLEET_CACHE_MAX_AGE_S", 600.0)  # a loaded machine


def _request(model: str, body: dict[str, Any] | None = None) -> Any:
    body = body or {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return RequestFactory().post(
        "/v1/chat/completions", data=json.dumps(body), content_type="application/json"
    )


@pytest.fixture
def fleet() -> Iterator[tuple[Hive, CatalogModel, Worker]]:
    tenant_selectors.callers_forget()
    hive_selectors.models_forget()
    hive = Hive.objects.create(
        name="kept-hive",
        token_prefix="tpk",
        token_hash="x",
        status=Hive.Status.ONLINE,
        channel_name="specific.kept!1",
        last_seen_at=timezone.now(),
        devices=[],
    )
    model = CatalogModel.objects.create(name="kept-llm", capability="text-gen", engine="echo")
    worker = Worker.objects.create(hive=hive, model=model, device="cpu", state="ready")
    yield hive, model, worker
    tenant_selectors.callers_forget()
    hive_selectors.models_forget()


class Trips:
    """Counts the request path's trips to the database thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = pipeline.db

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return await real(fn, *args, **kwargs)

        monkeypatch.setattr(pipeline, "db", counted)


async def prepare(key: str, model: str = "kept-llm") -> tuple[Any, Any, Any]:
    return await pipeline._prepare_async(key, _request(model), chat.CHAT)


@pytest.fixture
def key() -> str:
    _, plaintext = api_key_create(tenant=tenant_create(name="acme"))
    return plaintext


async def _warm(key: str, trips: Trips) -> Any:
    """Two requests: the first reads the database and keeps what it read, the second
    uses it (touching the key's last-used time is the first request's)."""
    await prepare(key)
    before = trips.n
    _, target, _ = await prepare(key)
    assert trips.n == before, "the second request went to the database"
    return target


async def test_a_second_request_stays_on_the_event_loop(
    fleet: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = Trips(monkeypatch)
    target = await _warm(key, trips)
    assert target.caller.tenant_name == "acme"
    assert target.model.name == "kept-llm"
    assert [p.hive_name for p in target.placements] == ["kept-hive"]


async def test_a_revoked_key_is_refused_at_the_next_request(
    fleet: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgiref.sync import sync_to_async

    trips = Trips(monkeypatch)
    await _warm(key, trips)
    row = await ApiKey.objects.aget(prefix=key.split("-")[2])
    await sync_to_async(api_key_revoke)(api_key=row)
    with pytest.raises(KeyRejected) as exc:
        await prepare(key)
    assert exc.value.reason == "revoked"


async def test_a_stopped_worker_is_seen_at_the_next_request(
    fleet: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, worker = fleet
    trips = Trips(monkeypatch)
    await _warm(key, trips)
    worker.state = "stopped"
    await worker.asave()
    with pytest.raises(APIError) as exc:
        await prepare(key)
    assert exc.value.status == 503 and exc.value.code == "model_unavailable"


async def test_a_disconnected_hive_is_seen_at_the_next_request(
    fleet: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asgiref.sync import sync_to_async

    hive, _, _ = fleet
    trips = Trips(monkeypatch)
    await _warm(key, trips)
    # A queryset update (not a save): the service bumps the generation itself.
    await sync_to_async(hive_disconnected)(hive_id=hive.pk, channel_name=hive.channel_name)
    with pytest.raises(APIError) as exc:
        await prepare(key)
    assert exc.value.status == 503


async def test_a_new_alias_and_a_new_worker_are_seen(
    fleet: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model, _ = fleet
    trips = Trips(monkeypatch)
    await _warm(key, trips)
    other = await Hive.objects.acreate(
        name="second-hive",
        token_prefix="tpk2",
        token_hash="x",
        status=Hive.Status.ONLINE,
        channel_name="specific.kept!2",
        last_seen_at=timezone.now(),
        devices=[],
    )
    await Worker.objects.acreate(hive=other, model=model, device="cpu", state="ready")
    before = trips.n
    _, target, _ = await prepare(key)
    assert trips.n == before + 1
    assert sorted(p.hive_name for p in target.placements) == ["kept-hive", "second-hive"]
    await ModelAlias.objects.acreate(name="kept-alias", model=model)
    _, target, _ = await prepare(key, "kept-alias")
    assert target.model.name == "kept-llm"


async def test_a_bad_body_is_still_400_and_a_bad_key_still_401(
    fleet: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = Trips(monkeypatch)
    await _warm(key, trips)
    with pytest.raises(APIError) as exc:
        await pipeline._prepare_async(key, _request("", {"model": "kept-llm"}), chat.CHAT)
    assert exc.value.status == 400
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(KeyRejected):
        await prepare(forged)


async def test_a_request_that_waited_looks_at_the_kept_placements_until_the_fleet_changes(
    fleet: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After waiting in its model's queue a request looks at the workers again: what this
    process keeps while the fleet is unchanged, the database once a worker changed."""
    _, _, worker = fleet
    trips = Trips(monkeypatch)
    target = await _warm(key, trips)
    before = trips.n
    placements = await pipeline.placements_now(target.model)
    assert trips.n == before, "an unchanged fleet was read from the database"
    assert [(p.hive_name, p.state) for p in placements] == [("kept-hive", "ready")]
    worker.state = "stopped"
    await worker.asave()
    assert await pipeline.placements_now(target.model) == []
    assert trips.n == before + 1
