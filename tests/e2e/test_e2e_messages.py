"""Anthropic's Messages API, CORS and request ids, end to end: a real queen and hive (SmolLM2
and the echo engine), the official `anthropic` client, and raw HTTP where a browser or a
client's header is the point."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from testkit.live import Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL, Stack

pytestmark = pytest.mark.e2e

ECHO = "echo-msgs"
APP = "https://app.example"
BEES = [{"role": "user", "content": "Write one sentence about bees."}]


@pytest.fixture(scope="module")
def msgs() -> Iterator[Stack]:
    dep = Deployment()
    try:
        queen = Queen(dep, env={"RBEE_CORS_ORIGINS": APP})
        hive = Hive(dep, queen, "hive-msgs", [CHAT_MODEL, f"{ECHO}=echo:"])
        queen.wait_for_model("hive-msgs", ECHO)
        dep.rbee("tenant", "create", "acme")
        api_key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        yield Stack(dep=dep, queen=queen, hive=hive, api_key=api_key)
    finally:
        dep.close()


def claude(stack: Stack, **kw: object) -> anthropic.Anthropic:
    kw.setdefault("api_key", stack.api_key)
    return anthropic.Anthropic(base_url=stack.queen.url, max_retries=0, **kw)  # type: ignore[arg-type]


def usage_row(stack: Stack, request_id: str) -> tuple[object, ...]:
    rows = stack.dep.sql(
        "SELECT modality, prompt_tokens, completion_tokens, client_request_id, outcome "
        f"FROM billing_usageevent WHERE request_id = '{request_id}'"
    )
    assert len(rows) == 1, rows
    return rows[0]


# --- /v1/messages -------------------------------------------------------------------------


def test_message_with_smollm2(msgs: Stack) -> None:
    raw = claude(msgs).messages.with_raw_response.create(
        model=CHAT_MODEL,
        max_tokens=24,
        system="You are a helpful assistant.",
        messages=BEES,
        metadata={"user_id": "end-user-1"},
        # Sampling as older Anthropic models take it (this SDK has no keywords for it).
        extra_body={"temperature": 0.5, "top_k": 20},
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.id.startswith("msg_")
    assert msg.model == CHAT_MODEL
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text.strip()  # type: ignore[union-attr]
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.stop_sequence is None
    assert msg.usage.input_tokens > 10
    assert 0 < msg.usage.output_tokens <= 24
    # Metered as chat, under the same id the answer names (Anthropic's request-id too).
    rid = raw.headers["x-request-id"]
    assert raw.headers["request-id"] == rid
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert usage_row(msgs, rid) == (
        "chat",
        msg.usage.input_tokens,
        msg.usage.output_tokens,
        "",
        "ok",
    )
    users = msgs.dep.sql(f"SELECT end_user FROM billing_usageevent WHERE request_id = '{rid}'")
    assert users == [("end-user-1",)]


def test_max_tokens_and_stop_sequences(msgs: Stack) -> None:
    client = claude(msgs)
    greedy = {"temperature": 0}
    cut = client.messages.create(model=CHAT_MODEL, max_tokens=2, messages=BEES, extra_body=greedy)
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 2
    # A space comes within a few words: the stop sequence that ended it is named, and
    # the text stops before it.
    stopped = client.messages.create(
        model=CHAT_MODEL,
        max_tokens=32,
        messages=BEES,
        stop_sequences=["zzz", " "],
        extra_body=greedy,
    )
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == " "
    assert " " not in stopped.content[0].text  # type: ignore[union-attr]


def test_streaming_event_sequence(msgs: Stack) -> None:
    client = claude(msgs)
    with client.messages.stream(model=CHAT_MODEL, max_tokens=24, messages=BEES) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    # Anthropic's order: message_start, one text block, message_delta, message_stop (the
    # SDK drops the ping, checked in the raw frames below, and adds "text" events).
    kinds = [k for k in kinds if k != "text"]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert final.content[0].text.strip()  # type: ignore[union-attr]
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.input_tokens > 10 and 0 < final.usage.output_tokens <= 24


def test_raw_stream_frames(msgs: Stack) -> None:
    """The bytes themselves: `event:` lines naming each `data:` object's type."""
    with httpx.stream(
        "POST",
        f"{msgs.queen.url}/v1/messages",
        headers={"x-api-key": msgs.api_key, "anthropic-version": "2023-06-01"},
        json={"model": ECHO, "max_tokens": 10, "stream": True, "messages": BEES},
        timeout=60,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-request-id"] == resp.headers["request-id"]
        body = resp.read().decode()
    frames = [f for f in body.split("\n\n") if f.strip()]
    events = []
    for frame in frames:
        head, data = frame.split("\n")
        assert head.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == head[7:]
        events.append(payload)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["content"] == [] and events[0]["message"]["stop_reason"] is None
    assert events[2] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Write one sentence about bees."
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 5


def test_bearer_key_and_blocks(msgs: Stack) -> None:
    """Authorization: Bearer works as x-api-key does; system and content as blocks."""
    client = anthropic.Anthropic(
        base_url=msgs.queen.url, auth_token=msgs.api_key, api_key=None, max_retries=0
    )
    msg = client.messages.create(
        model=ECHO,
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "text", "text": "echo these words"}]},
        ],
    )
    assert msg.content[0].text == "echo these words"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"


def test_count_tokens_matches_the_prompt_of_a_message(msgs: Stack) -> None:
    client = claude(msgs)
    counted = client.messages.count_tokens(model=CHAT_MODEL, system="Be brief.", messages=BEES)
    made = client.messages.create(model=CHAT_MODEL, max_tokens=1, system="Be brief.", messages=BEES)
    assert counted.input_tokens == made.usage.input_tokens > 10


def _anthropic_error(exc: anthropic.APIStatusError, status: int, kind: str) -> str:
    assert exc.status_code == status, exc.response.text
    body = exc.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind, body
    assert body["error"]["message"]
    assert exc.response.headers["x-request-id"]
    return str(body["error"]["message"])


def test_bad_requests_get_anthropic_errors(msgs: Stack) -> None:
    client = claude(msgs)
    create = client.messages.create
    with pytest.raises(anthropic.AuthenticationError) as auth:
        claude(msgs, api_key="rbee-wrong").messages.create(model=ECHO, max_tokens=5, messages=BEES)
    _anthropic_error(auth.value, 401, "authentication_error")
    with pytest.raises(anthropic.NotFoundError) as missing:
        create(model="no-such-model", max_tokens=5, messages=BEES)
    assert "no-such-model" in _anthropic_error(missing.value, 404, "not_found_error")
    cases: list[tuple[dict[str, object], str]] = [
        ({"messages": BEES}, "max_tokens"),  # required
        ({"max_tokens": 0, "messages": BEES}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        ({"max_tokens": 5, "messages": BEES, "temperature": 1.5}, "temperature"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": ""},
                            }
                        ],
                    }
                ],
            },
            "text only",
        ),
        (
            {
                "max_tokens": 5,
                "messages": BEES,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "server tool",
        ),
        ({"max_tokens": 5, "messages": BEES, "tool_choice": {"type": "any"}}, "no tools"),
        ({"max_tokens": 5, "messages": BEES, "mcp_servers": [{"url": "x"}]}, "MCP"),
    ]
    for body, says in cases:
        resp = httpx.post(
            f"{msgs.queen.url}/v1/messages",
            headers={"x-api-key": msgs.api_key, "anthropic-version": "2023-06-01"},
            json={"model": ECHO, **body},
        )
        assert resp.status_code == 400, (body, resp.text)
        err = resp.json()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert says in err["error"]["message"], (says, err)
    version = httpx.post(
        f"{msgs.queen.url}/v1/messages",
        headers={"x-api-key": msgs.api_key, "anthropic-version": "June 2023"},
        json={"model": ECHO, "max_tokens": 5, "messages": BEES},
    )
    assert version.status_code == 400 and "anthropic-version" in version.json()["error"]["message"]
    not_json = httpx.post(
        f"{msgs.queen.url}/v1/messages",
        headers={"x-api-key": msgs.api_key, "content-type": "application/json"},
        content=b"{not json",
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    # Still serving.
    assert create(model=ECHO, max_tokens=5, messages=BEES).content


# --- request ids and CORS (every /v1 answer) ---------------------------------------------


def test_request_ids_on_success_error_and_stream(msgs: Stack) -> None:
    url = f"{msgs.queen.url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {msgs.api_key}"}
    body = {"model": ECHO, "messages": BEES}
    ok = httpx.post(url, headers={**auth, "X-Client-Request-Id": "client-42"}, json=body)
    assert ok.status_code == 200
    rid = ok.headers["x-request-id"]
    assert ok.headers["x-client-request-id"] == "client-42"
    assert int(ok.headers["openai-processing-ms"]) >= 0
    assert usage_row(msgs, rid)[3:] == ("client-42", "ok")
    # An error before any usage row still has an id, the processing time and the echo.
    bad = httpx.post(url, headers={"X-Client-Request-Id": "c-1"}, json=body)
    assert bad.status_code == 401
    assert len(bad.headers["x-request-id"]) == 32
    assert bad.headers["x-client-request-id"] == "c-1"
    assert "openai-processing-ms" in bad.headers
    unknown = httpx.get(f"{msgs.queen.url}/v1/nowhere", headers=auth)
    assert unknown.status_code == 404 and unknown.headers["x-request-id"]
    # A stream: the same id as its usage row.
    with httpx.stream(
        "POST", url, headers={**auth, "X-Client-Request-Id": "s-9"}, json={**body, "stream": True}
    ) as streamed:
        streamed.read()
        srid = streamed.headers["x-request-id"]
        assert streamed.headers["x-client-request-id"] == "s-9"
        assert "openai-processing-ms" in streamed.headers
    assert usage_row(msgs, srid)[3] == "s-9"
    # An id a header cannot carry back, or too long: refused, and nothing was metered.
    before = msgs.dep.sql("SELECT count(*) FROM billing_usageevent")[0][0]
    long = httpx.post(url, headers={**auth, "X-Client-Request-Id": "x" * 513}, json=body)
    assert long.status_code == 400
    assert long.json()["error"]["param"] == "X-Client-Request-Id"
    assert "x-client-request-id" not in long.headers
    assert msgs.dep.sql("SELECT count(*) FROM billing_usageevent")[0][0] == before


def test_cors_for_the_configured_origin_only(msgs: Stack) -> None:
    url = f"{msgs.queen.url}/v1/chat/completions"
    asked = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }
    pre = httpx.options(url, headers=asked)
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == APP
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == asked["Access-Control-Request-Headers"]
    assert "access-control-allow-credentials" not in pre.headers
    # Anthropic's endpoint too.
    pre_msgs = httpx.options(f"{msgs.queen.url}/v1/messages", headers=asked)
    assert pre_msgs.status_code == 204
    # Another origin: no CORS headers, and the OPTIONS reaches the view (405).
    other = httpx.options(url, headers={**asked, "Origin": "https://evil.example"})
    assert other.status_code == 405
    assert "access-control-allow-origin" not in other.headers
    # The request itself: allowed, and its ids readable by the page.
    auth = {"Authorization": f"Bearer {msgs.api_key}"}
    resp = httpx.post(url, headers={**auth, "Origin": APP}, json={"model": ECHO, "messages": BEES})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in resp.headers["access-control-expose-headers"]
    assert "Origin" in resp.headers["vary"]
    err = httpx.post(url, headers={"Origin": APP}, json={"model": ECHO, "messages": BEES})
    assert err.status_code == 401 and err.headers["access-control-allow-origin"] == APP
    evil = httpx.post(
        url,
        headers={**auth, "Origin": "https://evil.example"},
        json={"model": ECHO, "messages": BEES},
    )
    assert evil.status_code == 200 and "access-control-allow-origin" not in evil.headers


# --- tools (the echo engine calls them deterministically: docs/tools.md) --------------------

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}
TIME = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}},
}


def test_tool_use_and_the_tool_loop(msgs: Stack) -> None:
    client = claude(msgs)
    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    msg = client.messages.create(
        model=ECHO, max_tokens=50, tools=[WEATHER, TIME], tool_choice={"type": "any"}, messages=ask
    )
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["tool_use"]
    call = msg.content[0]
    assert call.name == "get_weather"  # type: ignore[union-attr]
    assert call.input == {"city": "x", "unit": "c"}  # type: ignore[union-attr]
    assert call.id  # type: ignore[union-attr]
    # The result goes back as a tool_result block; the echo engine answers with it.
    final = client.messages.create(
        model=ECHO,
        max_tokens=50,
        tools=[WEATHER, TIME],
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": call.id,  # type: ignore[union-attr]
                        "content": [{"type": "text", "text": "Sunny, 21 C"}],
                    }
                ],
            },
        ],
    )
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == "Sunny, 21 C"  # type: ignore[union-attr]


def test_tool_choice_named_auto_and_parallel(msgs: Stack) -> None:
    client = claude(msgs)
    named = client.messages.create(
        model=ECHO,
        max_tokens=50,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time"},
        messages=BEES,
    )
    assert [(b.type, b.name) for b in named.content] == [("tool_use", "get_time")]  # type: ignore[union-attr]
    assert named.content[0].input == {}  # type: ignore[union-attr]
    both = [{"role": "user", "content": "call get_weather get_time"}]
    auto = client.messages.create(model=ECHO, max_tokens=50, tools=[WEATHER, TIME], messages=both)
    assert [b.name for b in auto.content] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    one = client.messages.create(
        model=ECHO,
        max_tokens=50,
        tools=[WEATHER, TIME],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=both,
    )
    assert [b.name for b in one.content] == ["get_weather"]  # type: ignore[union-attr]
    # "none": no call, the text answer.
    none = client.messages.create(
        model=ECHO, max_tokens=50, tools=[WEATHER], tool_choice={"type": "none"}, messages=both
    )
    assert none.stop_reason == "end_turn" and none.content[0].type == "text"


def test_tool_use_streams_input_json_deltas(msgs: Stack) -> None:
    client = claude(msgs)
    with client.messages.stream(
        model=ECHO,
        max_tokens=50,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=BEES,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["tool_use"]
    pieces = [
        e.delta.partial_json  # type: ignore[union-attr]
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert json.loads("".join(pieces)) == {"city": "x", "unit": "c"}
    assert final.stop_reason == "tool_use"
    assert final.content[0].input == {"city": "x", "unit": "c"}  # type: ignore[union-attr]


def test_bad_tool_histories(msgs: Stack) -> None:
    def post(body: dict[str, object]) -> httpx.Response:
        return httpx.post(
            f"{msgs.queen.url}/v1/messages",
            headers={"x-api-key": msgs.api_key},
            json={"model": ECHO, "max_tokens": 5, **body},
        )

    cases: list[dict[str, object]] = [
        # a tool_result that answers no call
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}],
                }
            ]
        },
        # tool_use in a user message
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}],
                }
            ]
        },
        # a tool without a schema, a named choice that is not declared
        {"messages": BEES, "tools": [{"name": "f"}]},
        {"messages": BEES, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "other"}},
    ]
    for body in cases:
        resp = post(body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["type"] == "invalid_request_error"
