"""A model that is still loading on a live hive: listed by /v1/models, and a request for it
waits in the model's queue (nothing is sent to the hive) until a worker is ready, then is
served; a refused or failed load releases the waiting requests at once with a 503 (the
hive's reason for operators, neutral words for tenants); a model nobody serves or loads
is still a 404 at once. The real queen (views, queue, the hive consumer) against a hive
played through Channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.db import connections

from hives.protocol import PROTOCOL_VERSION
from hives.services import hive_token_create
from inference import queueing
from rbee.asgi import application
from tenants.services import api_key_create, tenant_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

MODEL = "slow-llm"
REFUSAL = "cannot place slow-llm on cpu: it needs 40.0 GiB and 7.5 GiB are free (in use: sdxl)"


def worker(state: str, message: str = "") -> dict[str, Any]:
    return {
        "model": MODEL,
        "capability": "text-gen",
        "engine": "echo",
        "source": "",
        "device": "cpu",
        "state": state,
        "pinned": False,
        "inflight": 0,
        "message": message,
    }


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.RBEE_QUEUE_TIMEOUT = 20.0
    settings.RBEE_ANONYMOUS_TENANT = ""


@pytest.fixture(autouse=True)
async def _close_connections() -> Any:
    """The queen's database calls run on the loop's executor, whose threads keep their
    connections (kernel/aio.py): close them in every thread, or the test database cannot
    be dropped at the end."""
    yield
    loop = asyncio.get_running_loop()
    threads = min(32, (os.cpu_count() or 1) + 4)  # the default executor's size
    barrier = threading.Barrier(threads, timeout=5)

    def close() -> None:
        connections.close_all()
        barrier.wait()  # holds this thread, so each call runs in another one

    await asyncio.gather(*(loop.run_in_executor(None, close) for _ in range(threads)))


async def loading_hive(
    name: str = "h1", *, region: str = "", state: str = "starting"
) -> WebsocketCommunicator:
    """A hive that just connected: its start model is still loading (or in `state`)."""
    _, token = await database_sync_to_async(hive_token_create)(
        name=name, trust_models=True, region=region or None
    )
    comm = WebsocketCommunicator(
        application, "/hive/ws", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    connected, _ = await comm.connect()
    assert connected
    hello = {
        "op": "hello",
        "protocol": PROTOCOL_VERSION,
        "name": name,
        "version": "test",
        "region": region,
        "devices": [{"index": 0, "kind": "cpu", "gpu_type": "CPU"}],
        "workers": [worker(state)],
    }
    await comm.send_to(text_data=json.dumps(hello))
    assert json.loads(await comm.receive_from(timeout=5))["op"] == "welcome"
    return comm


async def report(comm: WebsocketCommunicator, *workers: dict[str, Any]) -> None:
    beat = {"op": "heartbeat", "devices": [], "workers": list(workers), "inflight": 0}
    await comm.send_to(text_data=json.dumps(beat))


def _keys() -> tuple[str, str]:
    tenant = tenant_create(name="acme")
    _, key = api_key_create(tenant=tenant)
    _, operator = api_key_create(tenant=tenant, scopes={"operator": True})
    return key, operator


async def keys() -> tuple[str, str]:
    return await database_sync_to_async(_keys)()


class Answer:
    """A response of the queen's ASGI application (/v1 is its lean app, as in production)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.status_code: int = raw["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in raw["headers"]}
        self.content: bytes = raw["body"]

    def json(self) -> Any:
        return json.loads(self.content)

    def __getitem__(self, header: str) -> str:
        return self.headers[header.lower()]


async def call(method: str, path: str, key: str, body: dict[str, Any] | None = None) -> Answer:
    headers = [(b"authorization", f"Bearer {key}".encode()), (b"host", b"testserver")]
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    comm = HttpCommunicator(application, method, path, body=data, headers=headers)
    return Answer(await comm.get_response(timeout=30))


async def chat(key: str, model: str = MODEL) -> Answer:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return await call("POST", "/v1/chat/completions", key, body)


async def waiting(count: int) -> None:
    """Until `count` requests wait in the model's queue."""
    deadline = time.monotonic() + 10
    while queueing.queue_depth(MODEL) != count:
        assert time.monotonic() < deadline, f"{queueing.queue_depth(MODEL)} waiting"
        await asyncio.sleep(0.02)


async def test_a_loading_model_is_listed_and_tenants_still_see_no_hive() -> None:
    comm = await loading_hive()
    key, operator = await keys()
    listed = (await call("GET", "/v1/models", key)).json()
    assert [m["id"] for m in listed["data"]] == [MODEL]
    assert "hives" not in listed["data"][0] and "placements" not in listed["data"][0]
    ops = (await call("GET", "/v1/models", operator)).json()
    assert ops["data"][0]["hives"] == ["h1"]
    assert [p["state"] for p in ops["data"][0]["placements"]] == ["starting"]
    await comm.disconnect()


async def test_a_request_for_a_loading_model_waits_in_its_queue_and_is_served_once_ready() -> None:
    comm = await loading_hive()
    key, _ = await keys()
    request = asyncio.create_task(chat(key))
    await waiting(1)
    await asyncio.sleep(0.5)  # several looks at the workers: still loading
    assert not request.done()
    assert await comm.receive_nothing(timeout=0.2)  # nothing dispatched to a loading worker
    await report(comm, worker("ready"))
    job = json.loads(await comm.receive_from(timeout=5))
    assert (job["op"], job["model"], job["task"]) == ("job", MODEL, "chat")
    await comm.send_to(text_data=json.dumps({"op": "ack", "id": job["id"]}))
    done = {
        "kind": "done",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    events = [{"kind": "delta", "text": "Hello"}, done]
    await comm.send_to(text_data=json.dumps({"op": "events", "id": job["id"], "events": events}))
    response = await asyncio.wait_for(request, 10)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hello"
    assert body["usage"]["completion_tokens"] == 1
    assert queueing.queue_depth(MODEL) == 0
    await comm.disconnect()


async def test_a_refused_load_releases_the_waiting_requests_with_a_503_and_the_reason() -> None:
    comm = await loading_hive()
    key, operator = await keys()
    tenant_request = asyncio.create_task(chat(key))
    operator_request = asyncio.create_task(chat(operator))
    await waiting(2)
    started = time.monotonic()
    await report(comm, worker("refused", REFUSAL))
    tenant_answer, operator_answer = await asyncio.wait_for(
        asyncio.gather(tenant_request, operator_request), 10
    )
    assert time.monotonic() - started < 3  # at once, not at the queue's 20 s timeout
    for answer in (tenant_answer, operator_answer):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "model_unavailable"
        assert answer["Retry-After"] == "5"
    # The operator hears the memory planner's reason and where; the tenant neither.
    assert operator_answer.json()["error"]["message"] == (
        f"The model '{MODEL}' could not be loaded: h1/cpu refused: {REFUSAL}."
    )
    assert tenant_answer.json()["error"]["message"] == (
        f"The model '{MODEL}' could not be loaded on any worker right now; try again later."
    )
    assert queueing.queue_depth(MODEL) == 0
    assert await comm.receive_nothing(timeout=0.2)  # nothing was dispatched
    # A request that comes later is told at once, the operator with the reason.
    later = await chat(operator)
    assert later.status_code == 503
    assert REFUSAL in later.json()["error"]["message"]
    tenant_later = await chat(key)
    assert tenant_later.status_code == 503 and "h1" not in tenant_later.json()["error"]["message"]
    await comm.disconnect()


async def test_a_failed_load_releases_the_waiting_requests_too() -> None:
    comm = await loading_hive()
    _, operator = await keys()
    request = asyncio.create_task(chat(operator))
    await waiting(1)
    await report(comm, worker("failed", "llama.cpp could not read the GGUF file"))
    answer = await asyncio.wait_for(request, 5)
    assert answer.status_code == 503
    assert answer.json()["error"]["message"] == (
        f"The model '{MODEL}' could not be loaded: h1/cpu failed: "
        "llama.cpp could not read the GGUF file."
    )
    await comm.disconnect()


async def test_a_model_still_loading_past_the_queue_timeout_is_a_503(settings: Any) -> None:
    settings.RBEE_QUEUE_TIMEOUT = 0.6
    comm = await loading_hive()
    key, _ = await keys()
    answer = await chat(key)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "model_loading"
    assert answer["Retry-After"] == "5"
    assert queueing.queue_depth(MODEL) == 0
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


async def test_a_model_nobody_serves_or_loads_is_still_a_404_at_once() -> None:
    comm = await loading_hive()
    key, _ = await keys()
    started = time.monotonic()
    answer = await chat(key, model="no-such-model")
    assert time.monotonic() - started < 2
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found"
    assert queueing.queue_depth("no-such-model") == 0
    await comm.disconnect()


def _region_keys() -> tuple[str, str]:
    _, anywhere = api_key_create(tenant=tenant_create(name="anywhere"))
    _, eu_only = api_key_create(tenant=tenant_create(name="eu-co", data_region="eu"))
    return anywhere, eu_only


async def finish(comm: WebsocketCommunicator) -> None:
    """The hive takes the job it was sent and answers it."""
    job = json.loads(await comm.receive_from(timeout=5))
    assert (job["op"], job["model"]) == ("job", MODEL)
    await comm.send_to(text_data=json.dumps({"op": "ack", "id": job["id"]}))
    done = {"kind": "done", "finish_reason": "stop", "usage": {"prompt_tokens": 3}}
    events = [{"kind": "delta", "text": "ok"}, done]
    await comm.send_to(text_data=json.dumps({"op": "events", "id": job["id"], "events": events}))


async def test_a_region_still_loading_neither_stalls_nor_fails_the_others_requests() -> None:
    """The model is ready on a US hive and still loading on the only EU hive: an EU-only
    tenant's request waits for its region's load without taking the model's slots from
    the others, and the EU worker's refusal fails that request alone."""
    us = await loading_hive("h-us", region="us", state="ready")
    eu = await loading_hive("h-eu", region="eu")
    anywhere, eu_only = await database_sync_to_async(_region_keys)()
    first = asyncio.create_task(chat(anywhere))  # takes the US worker's one slot
    job = json.loads(await us.receive_from(timeout=5))
    second = asyncio.create_task(chat(anywhere))  # waits for that slot
    await waiting(1)
    eu_request = asyncio.create_task(chat(eu_only))  # waits for the EU worker's load
    await waiting(2)
    await asyncio.sleep(3 * queueing.LOADING_POLL)  # the EU view's watcher looks: loading
    # The first request ends: its slot goes to the second at once.
    await us.send_to(text_data=json.dumps({"op": "ack", "id": job["id"]}))
    done = {"kind": "done", "finish_reason": "stop", "usage": {"prompt_tokens": 3}}
    events = [{"kind": "delta", "text": "ok"}, done]
    await us.send_to(text_data=json.dumps({"op": "events", "id": job["id"], "events": events}))
    assert (await asyncio.wait_for(first, 5)).status_code == 200
    await finish(us)
    assert (await asyncio.wait_for(second, 5)).status_code == 200
    assert not eu_request.done() and queueing.queue_depth(MODEL) == 1
    # The EU worker is refused: the EU request hears 503 at once, nothing else is touched.
    third = asyncio.create_task(chat(anywhere))
    await finish(us)
    await report(eu, worker("refused", REFUSAL))
    eu_answer = await asyncio.wait_for(eu_request, 5)
    assert eu_answer.status_code == 503
    assert eu_answer.json()["error"]["code"] == "model_unavailable"
    assert (await asyncio.wait_for(third, 5)).status_code == 200
    assert queueing.queue_depth(MODEL) == 0
    assert await eu.receive_nothing(timeout=0.2)  # nothing was sent outside the US hive
    await us.disconnect()
    await eu.disconnect()
