"""Tenants never learn the fleet's layout: which hive and device served a request
(`X-Rbee-Worker`, `X-Rbee-Decision`) and the workers' own error texts (which name hives,
devices and the other models on them) go only to operators' callers; a tenant's key gets
neutral words (inference.errors.neutral_error), with the same status and code."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from channels.layers import get_channel_layer

from hives.selectors import Placement
from inference.dispatch import Job
from testkit.live import Deployment, Hive, Queen


def place(channel: str) -> Placement:
    return Placement(
        worker_id=1,
        hive_id=1,
        hive_name="secret-hive",
        channel_name=channel,
        device="cuda:0",
        inflight=0,
    )


async def one_error(event: dict[str, Any], *, neutral: bool) -> dict[str, Any]:
    """The error event a job yields when its hive answers with `event`."""
    layer = get_channel_layer()
    channel = await layer.new_channel()

    async def hive() -> None:
        msg = await layer.receive(channel)
        await layer.send(msg["reply"], {"type": "job.ack", "hive_id": 1})
        await layer.send(msg["reply"], {"type": "job.events", "hive_id": 1, "events": [event]})

    task = asyncio.create_task(hive())
    job = Job(
        job_id="j",
        model="llama-3-8b",
        task="chat",
        request={},
        placements=[place(channel)],
        neutral_errors=neutral,
    )
    got = [e async for e in job.events()]
    await task
    return got[-1]


HIVE_TEXTS = [
    {
        "kind": "error",
        "message": "model 'llama-3-8b' is stopped on hive 'secret-hive'",
        "code": "model_unavailable",
        "status": 503,
    },
    {
        "kind": "error",
        "message": "cannot place llama-3-8b on cuda:0: in use: sdxl 6.9 GiB (pinned)",
        "code": "model_unavailable",
        "status": 503,
    },
    {
        "kind": "error",
        "message": "hive 'secret-hive' disconnected while running the request",
        "code": "hive_disconnected",
        "status": 502,
    },
]


@pytest.mark.asyncio
@pytest.mark.parametrize("event", HIVE_TEXTS)
async def test_a_tenant_reads_neutral_words_for_the_hives_errors(event: dict[str, Any]) -> None:
    got = await one_error(event, neutral=True)
    assert (got["status"], got["code"]) == (event["status"], event["code"])
    for secret in ("secret-hive", "cuda", "sdxl", "pinned"):
        assert secret not in got["message"]
    assert "llama-3-8b" in got["message"]
    if event["status"] == 503:
        assert (
            got["message"]
            == "No worker is ready for model 'llama-3-8b' right now; try again shortly."
        )
    # An operator's job keeps the hive's own words.
    assert await one_error(event, neutral=False) == event


@pytest.mark.asyncio
async def test_errors_about_the_request_itself_pass_unchanged() -> None:
    event = {
        "kind": "error",
        "message": "the echo engine cannot produce structured output",
        "code": "unsupported_parameter",
        "param": "response_format",
        "status": 400,
    }
    assert await one_error(event, neutral=True) == event


# Real processes ---------------------------------------------------------------------------


class Farm:
    def __init__(self, queen: Queen, tenant_key: str, operator_key: str) -> None:
        self.queen, self.tenant_key, self.operator_key = queen, tenant_key, operator_key


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "secret-box", ["echo-a=echo:", "echo-b=echo:"])
        queen.wait_for_model("secret-box", "echo-b")
        dep.rbee("plan", "set", "small", "--models", "echo-a")
        dep.rbee("tenant", "create", "acme", "--plan", "small")
        dep.rbee("tenant", "create", "ops")
        tenant_key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        operator_key = dep.rbee("key", "create", "--tenant", "ops", "--operator").stdout.strip()
        yield Farm(queen, tenant_key, operator_key)
    finally:
        dep.close()


def chat(farm: Farm, key: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{farm.queen.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "where am I"}]},
        timeout=30,
    )


@pytest.mark.e2e
def test_a_tenant_lists_its_plans_models_without_hives(farm: Farm) -> None:
    client = openai.OpenAI(base_url=f"{farm.queen.url}/v1", api_key=farm.tenant_key, max_retries=0)
    page = client.models.list()
    assert [m.id for m in page.data] == ["echo-a"]
    raw = httpx.get(
        f"{farm.queen.url}/v1/models", headers={"Authorization": f"Bearer {farm.tenant_key}"}
    ).text
    assert "secret-box" not in raw and "placements" not in raw and "hives" not in raw
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("echo-b")
    ops = openai.OpenAI(base_url=f"{farm.queen.url}/v1", api_key=farm.operator_key, max_retries=0)
    listed = ops.models.list().data
    assert [m.id for m in listed] == ["echo-a", "echo-b"]
    assert all(getattr(m, "hives", None) == ["secret-box"] for m in listed)


@pytest.mark.e2e
def test_only_an_operators_key_hears_which_hive_served_it(farm: Farm) -> None:
    tenant = chat(farm, farm.tenant_key, "echo-a")
    assert tenant.status_code == 200, tenant.text
    assert "x-rbee-worker" not in tenant.headers and "x-rbee-decision" not in tenant.headers
    assert "secret-box" not in str(tenant.headers) + tenant.text
    assert tenant.headers["x-request-id"]
    operator = chat(farm, farm.operator_key, "echo-a")
    assert operator.status_code == 200, operator.text
    assert operator.headers["x-rbee-worker"] == "secret-box/cpu"
    assert operator.headers["x-rbee-decision"] == "default"
