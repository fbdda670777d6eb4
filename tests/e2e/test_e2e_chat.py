"""The walking skeleton, end to end: real queen, real hive, real SmolLM2, official client."""

from __future__ import annotations

import itertools
import time

import openai
import pytest

from tests.conftest import CHAT_MODEL, Stack
from tests.openai_shapes import assert_openai_shape

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Write one sentence about bees."}]


def test_models_lists_the_served_chat_model(stack: Stack) -> None:
    models = stack.client().models.list()
    ids = [m.id for m in models.data]
    assert ids == [CHAT_MODEL]
    entry = models.data[0].model_dump()
    assert entry["capability"] == "text-gen"
    assert "hives" not in entry  # a tenant's key: not where it runs
    assert stack.client().models.retrieve(CHAT_MODEL).id == CHAT_MODEL
    # An operator's key also sees the hives.
    ops = stack.dep.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()
    listed = stack.client(api_key=ops).models.list().data
    assert listed[0].model_dump()["hives"] == ["hive-a"]


def test_chat_completion_non_streaming(stack: Stack) -> None:
    resp = stack.client().chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=32, temperature=0.7
    )
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == CHAT_MODEL
    assert len(resp.choices) == 1
    text = resp.choices[0].message.content
    assert text and text.strip()
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 5
    assert 0 < resp.usage.completion_tokens <= 32
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_completion_streams_incrementally(stack: Stack) -> None:
    started = time.monotonic()
    stream = stack.client().chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Tell me a long story about a bee."}],
        max_tokens=64,
        temperature=0.7,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[float] = []
    pieces: list[str] = []
    finish = None
    usage = None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            arrivals.append(time.monotonic() - started)
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    assert finish in ("stop", "length")
    assert "".join(pieces).strip()
    assert len(pieces) >= 5, pieces
    # Incremental: the pieces arrive spread out as tokens are generated (~10 ms apart),
    # not in one burst at the end. (Measured between pieces, not from the request's start,
    # which also counts any wait for a busy worker.)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] > 0.05, arrivals
    assert sum(g > 0.002 for g in gaps) >= len(gaps) // 2, arrivals
    assert usage is not None
    assert usage.prompt_tokens > 5
    assert usage.completion_tokens >= len(pieces) - 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_without_include_usage_has_no_usage_chunk(stack: Stack) -> None:
    chunks = list(
        stack.client().chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, max_tokens=8, stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[0].choices[0].delta.role == "assistant"


def test_max_tokens_and_max_completion_tokens_are_honoured(stack: Stack) -> None:
    client = stack.client()
    a = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=5, temperature=0.9, seed=1
    )
    assert a.usage.completion_tokens == 5
    assert a.choices[0].finish_reason == "length"
    b = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_completion_tokens=3, max_tokens=50, seed=1
    )
    assert b.usage.completion_tokens == 3


def test_seed_makes_sampling_repeatable(stack: Stack) -> None:
    client = stack.client()

    def ask(seed: int) -> str:
        r = client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, max_tokens=24, temperature=1.0, seed=seed
        )
        return r.choices[0].message.content or ""

    first = ask(42)
    assert ask(42) == first
    others = {ask(s) for s in (1, 2, 3)}
    assert others != {first}


def test_stop_sequence_ends_the_answer_before_it(stack: Stack) -> None:
    client = stack.client()
    base = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=30, temperature=0, seed=7
    )
    text = base.choices[0].message.content or ""
    words = text.split()
    assert len(words) >= 4, text
    stop = words[3]
    cut = client.chat.completions.create(
        model=CHAT_MODEL, messages=MESSAGES, max_tokens=30, temperature=0, seed=7, stop=[stop]
    )
    got = cut.choices[0].message.content or ""
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in got
    assert text.startswith(got)
    assert len(got) < len(text)


def test_temperature_zero_is_deterministic_and_top_p_accepted(stack: Stack) -> None:
    client = stack.client()
    outs = {
        client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, max_tokens=12, temperature=0, top_p=0.5
        )
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(outs) == 1


def test_multi_turn_conversation_and_text_content_parts(stack: Stack) -> None:
    resp = stack.client().chat.completions.create(
        model=CHAT_MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one?"},
        ],
        max_tokens=8,
    )
    assert resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 15


def test_concurrent_requests_are_multiplexed_over_one_hive(stack: Stack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = stack.client()

    def one(i: int) -> int:
        r = client.chat.completions.create(
            model=CHAT_MODEL, messages=MESSAGES, max_tokens=6, seed=i
        )
        return r.usage.completion_tokens

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(0 < n <= 6 for n in results)


def test_healthz_reports_connected_hives(stack: Stack) -> None:
    import httpx

    body = httpx.get(f"{stack.queen.url}/healthz").json()
    assert body["status"] == "ok"
    hive = next(h for h in body["hives"] if h["name"] == "hive-a")
    assert hive["region"] == "" and hive["models"] == [CHAT_MODEL]
    assert hive["workers"] == [
        {"model": CHAT_MODEL, "device": "cpu", "state": "ready", "message": ""}
    ]


def test_openai_client_raises_typed_errors(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        stack.client().chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert exc.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=stack.base_url, api_key="sk-rbee-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_client_that_goes_away_cancels_the_generation(stack: Stack) -> None:
    import httpx

    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "Write an endless story about bees."}],
        "max_tokens": 3000,
        "temperature": 1.0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    with httpx.stream(
        "POST", f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=30
    ) as r:
        job_id = r.headers["x-request-id"]
        for i, _line in enumerate(r.iter_lines()):
            if i >= 6:
                break  # hang up mid-stream
    deadline = time.monotonic() + 10
    while f"job {job_id} cancelled by the queen" not in stack.hive.log.read_text():
        assert time.monotonic() < deadline, "the hive was never told to stop"
        time.sleep(0.05)
    # The worker runs one job at a time: had the long generation gone on, this one
    # would wait behind ~3000 tokens (a minute or more on these CPUs); 4 tokens take well
    # under a second alone, a few seconds when the other test worker loads both cores.
    started = time.monotonic()
    resp = stack.client().chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=4)
    assert resp.usage.completion_tokens == 4
    assert time.monotonic() - started < 15


def test_bodies_match_openais_schemas(stack: Stack) -> None:
    import json

    import httpx

    h = {"Authorization": f"Bearer {stack.api_key}"}
    models = httpx.get(f"{stack.base_url}/models", headers=h).json()
    assert_openai_shape("ListModelsResponse", models)
    assert_openai_shape(
        "Model", httpx.get(f"{stack.base_url}/models/{CHAT_MODEL}", headers=h).json()
    )
    body = {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 5}
    resp = httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=h).json()
    assert_openai_shape("CreateChatCompletionResponse", resp)
    chunks = []
    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        headers=h,
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
            elif line:
                assert line == "data: [DONE]", line
    assert len(chunks) >= 3
    for chunk in chunks:
        assert_openai_shape("CreateChatCompletionStreamResponse", chunk)
    assert len({c["id"] for c in chunks}) == 1


def test_structured_output_with_a_json_schema(stack: Stack) -> None:
    import json

    resp = stack.client().chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Describe a bee with a name and an age."}],
        max_tokens=80,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "bee",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name", "age"],
                },
            },
        },
    )
    assert resp.choices[0].finish_reason == "stop"
    bee = json.loads(resp.choices[0].message.content or "")
    assert set(bee) >= {"name", "age"} and isinstance(bee["age"], int)
