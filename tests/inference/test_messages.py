"""/v1/messages without a queen: Anthropic bodies into the chat request the pipeline
serves, their errors in Anthropic's body, and the SSE framing of a job's events (the real
thing runs end to end in tests/e2e/test_e2e_messages.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import Any

import pytest
from django.http import JsonResponse
from django.test import RequestFactory

from inference import messages
from inference.errors import APIError
from inference.textparts import ToolCalls

BEES = [{"role": "user", "content": "Hi"}]


def parse(body: dict[str, Any], **headers: str) -> messages.Messages:
    request = RequestFactory().post(
        "/v1/messages", data=json.dumps(body), content_type="application/json", headers=headers
    )
    return messages.parse(request)


def refused(body: dict[str, Any], **headers: str) -> APIError:
    with pytest.raises(APIError) as info:
        parse(body, **headers)
    assert info.value.status == 400
    return info.value


def test_a_conversation_becomes_chat_messages() -> None:
    got = parse(
        {
            "model": "m",
            "max_tokens": 9,
            "system": [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Looking."},
                        {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "Oslo"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "rain"},
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["a", "b", "c", "d", "e"],
            "temperature": 1.0,
            "top_k": 5,
            "metadata": {"user_id": "u-1"},
        }
    )
    chat = got.chat
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be\nbrief."),
        ("user", "weather?"),
        ("assistant", "Looking."),
        ("tool", "rain"),
        ("user", "and tomorrow?"),
    ]
    assert chat.max_tokens == 9 and chat.temperature == 1.0 and chat.user == "u-1"
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert got.user == "u-1"
    assert messages.to_chat(got.body)["messages"][2]["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "w", "arguments": '{"c": "Oslo"}'}}
    ]


def test_structured_output_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    got = parse(
        {
            "model": "m",
            "max_tokens": 9,
            "messages": BEES,
            "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}},
        }
    )
    assert got.chat.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": BEES}, "max_tokens"),
        ({"max_tokens": 1, "messages": BEES, "top_p": 2}, "top_p"),
        ({"max_tokens": 1, "messages": BEES, "top_k": 0}, "top_k"),
        ({"max_tokens": 1, "messages": BEES, "stop_sequences": [""]}, "stop_sequences[0]"),
        ({"max_tokens": 1, "messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        (
            {"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0].type",
        ),
        ({"max_tokens": 1, "messages": BEES, "system": [{"type": "image"}]}, "system[0]"),
        ({"max_tokens": 1, "messages": BEES, "tools": [{"name": "a b", "input_schema": {}}]}, None),
        ({"max_tokens": 1, "messages": BEES, "thinking": {"type": "maybe"}}, "thinking.type"),
        ({"max_tokens": 1, "messages": BEES, "metadata": {"user_id": 7}}, "metadata.user_id"),
        (
            {"max_tokens": 1, "messages": BEES, "output_config": {"format": {"type": "xml"}}},
            "output_config.format.type",
        ),
    ],
)
def test_bad_bodies_name_the_param(body: dict[str, Any], param: str | None) -> None:
    err = refused({"model": "m", **body})
    if param is not None:
        assert err.param == param, err.message


def test_versions_are_dates() -> None:
    assert parse(
        {"model": "m", "max_tokens": 1, "messages": BEES}, **{"anthropic-version": "2026-10-21"}
    )
    for bad in ("2022-12-31", "latest", "2023-06-01; x"):
        err = refused(
            {"model": "m", "max_tokens": 1, "messages": BEES}, **{"anthropic-version": bad}
        )
        assert err.param == "anthropic-version"


def test_count_tokens_needs_no_max_tokens_and_asks_for_one() -> None:
    request = RequestFactory().post(
        "/v1/messages/count_tokens",
        data=json.dumps({"model": "m", "messages": BEES}),
        content_type="application/json",
    )
    got = messages.parse_count(request)
    assert got.count_only and got.chat.max_tokens == 1


@pytest.mark.parametrize(
    ("status", "anthropic_status", "kind"),
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (413, 413, "request_too_large"),
        (415, 415, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (502, 500, "api_error"),
        (503, 529, "overloaded_error"),
        (504, 504, "timeout_error"),
    ],
)
def test_errors_in_anthropics_body(status: int, anthropic_status: int, kind: str) -> None:
    response = APIError(status, "what went wrong", code="x").response()
    response["Retry-After"] = "5"
    messages.anthropic_error(response)
    assert response.status_code == anthropic_status
    assert json.loads(response.content) == {
        "type": "error",
        "error": {"type": kind, "message": "what went wrong"},
    }
    assert response["Retry-After"] == "5"  # the headers stay
    assert isinstance(response, JsonResponse)


async def _events(*events: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
    for e in events:
        yield e


def _frames(raw: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for chunk in raw:
        head, data = chunk.decode().strip().split("\n")
        body = json.loads(data.removeprefix("data: "))
        assert head == f"event: {body['type']}"
        out.append(body)
    return out


async def test_a_worker_error_mid_stream_is_an_error_event() -> None:
    stream = messages._stream(
        _events(
            {"kind": "delta", "text": "Hel", "prompt_tokens": 7},
            {"kind": "error", "status": 503, "message": "gone", "code": "hive_disconnected"},
        ),
        "msg_1",
        "m",
        [],
        ToolCalls.for_request({}),
    )
    frames = _frames([b async for b in stream])
    assert [f["type"] for f in frames] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert frames[0]["message"]["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert frames[-1]["error"] == {"type": "overloaded_error", "message": "gone"}


async def test_text_then_tool_call_blocks_and_stop_sequence() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    stream = messages._stream(
        _events(
            {"kind": "delta", "text": "Let me check."},
            {"kind": "delta", "tool_calls": [{**call, "function": {"name": "f", "arguments": ""}}]},
            {"kind": "delta", "tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
            {"kind": "delta", "tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
            {"kind": "delta", "tool_calls": "garbage"},  # dropped, as chat drops it
            {
                "kind": "done",
                "finish_reason": "tool_calls",
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            },
        ),
        "msg_1",
        "m",
        [],
        ToolCalls.for_request({"tools": [{"type": "function", "function": {"name": "f"}}]}),
    )
    frames = _frames([b async for b in stream])
    kinds = [(f["type"], f.get("index")) for f in frames]
    assert kinds == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert frames[5]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    assert frames[6]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":'}
    assert frames[9]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert frames[9]["usage"] == {"input_tokens": 3, "output_tokens": 4}
    done = {"finish_reason": "stop", "stop_sequence": "END"}
    assert messages.stop_reason(done, ["END"]) == ("stop_sequence", "END")
    assert messages.stop_reason(done, []) == ("end_turn", None)  # not one the client sent
    assert messages.stop_reason({"finish_reason": "length"}, []) == ("max_tokens", None)


async def test_count_tokens_reads_only_the_usage() -> None:
    """count_tokens runs the prompt for one token: whatever that token is (here the cut-off
    start of a forced tool call, arguments not yet a JSON object), the answer is the
    prompt's count, never an error about the content nobody asked for."""
    call_start = {"index": 0, "id": "call_1", "type": "function"}
    job = SimpleNamespace(
        events=lambda: _events(
            {"kind": "delta", "tool_calls": [{**call_start, "function": {"name": "f"}}]},
            {"kind": "delta", "tool_calls": [{"index": 0, "function": {"arguments": '{"'}}]},
            {
                "kind": "done",
                "finish_reason": "length",
                "usage": {"prompt_tokens": 42, "completion_tokens": 1},
            },
        )
    )
    body = SimpleNamespace(count_only=True)
    work = SimpleNamespace(model="m", request={"stop": []})
    response = await messages.respond(SimpleNamespace(body=body, job=job, work=work))  # type: ignore[arg-type]
    assert response.status_code == 200
    assert json.loads(response.content) == {"input_tokens": 42}  # type: ignore[attr-defined]
