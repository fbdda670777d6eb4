"""A hive connects at once and shows its start model loading; a request sent right then
waits in the model's queue and is served once the worker is ready (the first seconds
after `rbee up` used to answer 404: the hive connected only after its slowest model had
loaded). A real queen, a real hive, the bundled SmolLM2 and the official client."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion

from rbee.cli.up import _wait_ready
from testkit.live import Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e

HIVE = "hive-l"


def first_sight(queen: Queen, timeout: float = 60) -> tuple[dict[str, Any], float]:
    """The hive as /healthz first shows it (connected), and when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for h in queen.wait_healthy()["hives"]:
            if h["name"] == HIVE:
                return h, time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"hive {HIVE} never connected:\n{queen.log.read_text()}")


def test_a_hive_connects_while_loading_and_a_request_sent_then_waits_and_succeeds(
    deployment: Deployment,
) -> None:
    dep = deployment
    queen = Queen(dep)
    dep.rbee("tenant", "create", "acme")
    key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
    ops = dep.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()
    hive = Hive(dep, queen, HIVE, [CHAT_MODEL], wait=False)

    seen, connected_at = first_sight(queen)
    # Connected, its model still loading: not ready, shown as starting.
    assert seen["models"] == []
    assert seen["workers"] == [
        {"model": CHAT_MODEL, "device": "cpu", "state": "starting", "message": ""}
    ]
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)

    def ask() -> ChatCompletion:
        return client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=1) as pool:
        # Right after the hive connected: it must wait for the model, not 404 or 503.
        pending = pool.submit(ask)
        # /v1/models lists the loading model: a tenant sees it (and no hive), an
        # operator also where it loads.
        listed = client.models.list().data
        assert [m.id for m in listed] == [CHAT_MODEL]
        assert "hives" not in listed[0].model_dump()
        ops_client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=ops, max_retries=0)
        placements = ops_client.models.list().data[0].model_dump()["placements"]
        assert [(p["hive"], p["state"]) for p in placements] in (
            [(HIVE, "starting")],
            [(HIVE, "ready")],  # it may have finished loading by now
        )
        # `rbee up` prints its ready line when the model is ready, not when the hive
        # connects: its wait returns only once /healthz lists the model as served.
        assert _wait_ready(queen.port, [queen.proc, hive.proc], CHAT_MODEL, timeout=120)
        ready_at = time.monotonic()
        now = {h["name"]: h for h in queen.wait_healthy()["hives"]}[HIVE]
        assert now["models"] == [CHAT_MODEL]
        assert now["workers"][0]["state"] == "ready"
        reply = pending.result(timeout=120)
    assert reply.choices[0].message.content
    assert reply.model == CHAT_MODEL
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    # The hive said hello before its worker was up (its log, in order; how long the load
    # takes depends on the machine: SmolLM2 loads in 0.35 s on a quiet one, so no fixed gap).
    log = hive.log.read_text()
    assert log.index("connected to the queen") < log.index(f"worker {CHAT_MODEL} ready"), log
    assert ready_at > connected_at
