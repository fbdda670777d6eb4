"""Usage survives the queen: a queen SIGKILLed mid-stream leaves the request's provisional
usage row, with the counts of its last heartbeat, and the queen that starts next settles it
as `interrupted` (billing.services.usage_settle_stale). On PostgreSQL and on SQLite."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from testkit.live import Deployment, Hive, Queen, bundled_gguf

pytestmark = pytest.mark.e2e

MSG = [{"role": "user", "content": "Tell me a long story about bees."}]


@pytest.fixture(params=["configured", "sqlite"])
def dep(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    d = Deployment(embedded=True if request.param == "sqlite" else None)
    try:
        yield d
    finally:
        d.close()


def usage_row(dep: Deployment, request_id: str) -> tuple[Any, ...] | None:
    assert request_id.isalnum()
    rows = dep.sql(
        "select outcome, prompt_tokens, completion_tokens, queen from billing_usageevent "
        f"where request_id = '{request_id}'"
    )
    return rows[0] if rows else None


def test_a_queen_killed_mid_stream_leaves_interrupted_usage(dep: Deployment) -> None:
    queen = Queen(dep, env={"RBEE_USAGE_HEARTBEAT_SECONDS": "0.3"})
    Hive(dep, queen, "h1", [f"story-llm=llama.cpp:{bundled_gguf()}"])
    dep.rbee("tenant", "create", "t1")
    key = dep.rbee("key", "create", "--tenant", "t1").stdout.strip()
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="story-llm", messages=MSG, max_tokens=2000, temperature=1.0, stream=True
    )
    request_id = stream.response.headers["x-request-id"]
    # While the answer streams, the row is provisional and its heartbeat brings the
    # running counts to it.
    seen: tuple[Any, ...] | None = None
    deadline = time.monotonic() + 60
    for i, _chunk in enumerate(stream):
        if i % 5 == 0:
            seen = usage_row(dep, request_id)
            assert seen is not None and seen[0] == "provisional"
            if seen[2] > 0:
                break
        assert time.monotonic() < deadline, "the provisional row never got counts"
    assert seen is not None
    queen.stop(signal.SIGKILL)
    stream.close()
    after_kill = usage_row(dep, request_id)
    assert after_kill is not None and after_kill[0] == "provisional"

    queen.start()  # a new queen process settles what the dead one left
    deadline = time.monotonic() + 30
    row = usage_row(dep, request_id)
    while row is not None and row[0] == "provisional" and time.monotonic() < deadline:
        time.sleep(0.2)
        row = usage_row(dep, request_id)
    assert row is not None
    outcome, prompt_tokens, completion_tokens, _queen = row
    assert outcome == "interrupted"
    assert prompt_tokens > 0 and completion_tokens >= seen[2] > 0
    # Exactly one row for the request.
    count = f"select count(*) from billing_usageevent where request_id = '{request_id}'"
    assert dep.sql(count) == [(1,)]


def test_a_stream_longer_than_the_concurrency_lease_keeps_its_slot(deployment: Deployment) -> None:
    """A tenant allowed one request at a time: while a stream runs for several times the
    lease (RBEE_CONCURRENCY_LEASE_SECONDS, short here), a second request is still refused,
    because the running one renews its lease; once it ends, the slot is free."""
    queen = Queen(
        deployment,
        env={"RBEE_CONCURRENCY_LEASE_SECONDS": "1.5", "RBEE_USAGE_HEARTBEAT_SECONDS": "0.3"},
    )
    Hive(deployment, queen, "h1", [f"story-llm=llama.cpp:{bundled_gguf()}"])
    deployment.rbee("plan", "set", "single", "max_concurrent=1")
    deployment.rbee("tenant", "create", "t1", "--plan", "single")
    key = deployment.rbee("key", "create", "--tenant", "t1").stdout.strip()
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
    refused = 0
    # A sampled story may end early (an end-of-text before 4.5 s): then try another one.
    for _attempt in range(3):
        stream = client.chat.completions.create(
            model="story-llm", messages=MSG, max_tokens=2000, temperature=1.0, stream=True
        )
        started = time.monotonic()
        for _chunk in stream:
            if time.monotonic() - started > 3 * 1.5:
                with pytest.raises(openai.RateLimitError) as exc:
                    client.chat.completions.create(model="story-llm", messages=MSG, max_tokens=1)
                assert exc.value.code == "rate_limit_exceeded"
                refused += 1
                if refused == 2:
                    break
        if refused == 2:
            break
        stream.close()
        refused = 0
        _wait_for_the_slot(client)
    stream.close()
    assert refused == 2, "no stream outlived the lease"
    # The abandoned stream's slot comes back once the queen has settled it.
    _wait_for_the_slot(client)


def _wait_for_the_slot(client: openai.OpenAI) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            client.chat.completions.create(model="story-llm", messages=MSG, max_tokens=1)
            return
        except openai.RateLimitError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_a_live_request_settled_as_interrupted_still_records_its_final_usage(
    deployment: Deployment,
) -> None:
    """A request the settler took for dead (here: its heartbeat is slower than the lease,
    as for a queen that cannot reach the database for a while) is settled as
    `interrupted`; when it ends, its final usage replaces the heartbeat's counts, once."""
    queen = Queen(
        deployment,
        env={
            "RBEE_USAGE_LEASE_SECONDS": "1",
            "RBEE_USAGE_SETTLE_SECONDS": "0.2",
            "RBEE_USAGE_HEARTBEAT_SECONDS": "60",
        },
    )
    Hive(deployment, queen, "h1", [f"story-llm=llama.cpp:{bundled_gguf()}"])
    deployment.rbee("tenant", "create", "t1")
    key = deployment.rbee("key", "create", "--tenant", "t1").stdout.strip()
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
    deadline = time.monotonic() + 90
    chunks = 0
    row: tuple[Any, ...] | None = None
    # A sampled story may end (an end-of-text) before the settler takes it for dead: then
    # try another one.
    for _attempt in range(4):
        stream = client.chat.completions.create(
            model="story-llm", messages=MSG, max_tokens=2000, temperature=1.0, stream=True
        )
        request_id = stream.response.headers["x-request-id"]
        for chunks, _chunk in enumerate(stream, 1):
            row = usage_row(deployment, request_id)
            if chunks >= 3 and row is not None and row[0] == "interrupted":
                break
            assert time.monotonic() < deadline, "the settler never took the request for dead"
        if chunks >= 3 and row is not None and row[0] == "interrupted":
            break
        stream.close()
    assert row is not None and row[0] == "interrupted" and row[2] == 0
    stream.close()  # the client leaves: the queen finalises with what was generated
    deadline = time.monotonic() + 30
    while row is not None and row[0] == "interrupted" and time.monotonic() < deadline:
        time.sleep(0.2)
        row = usage_row(deployment, request_id)
    assert row is not None
    outcome, prompt_tokens, completion_tokens, _queen = row
    assert outcome == "disconnected"
    assert prompt_tokens > 0 and completion_tokens >= chunks - 1 > 0
    count = f"select count(*) from billing_usageevent where request_id = '{request_id}'"
    assert deployment.sql(count) == [(1,)]
