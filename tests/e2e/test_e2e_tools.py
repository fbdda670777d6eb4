"""Tool calling through a real queen and hive, driven by the official `openai` client:
the echo engine's deterministic calls (the contract of docs/tools.md, end to end), and
SmolLM2 on llama.cpp, whose template has no tools (the grammar-constrained generic path)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from testkit.live import Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL
from tests.openai_shapes import assert_openai_shape

pytestmark = pytest.mark.e2e

ECHO = "echo-tools"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


class Farm:
    def __init__(self, queen: Queen, key: str) -> None:
        self.queen, self.key = queen, key

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.queen.url}/v1", api_key=self.key, max_retries=0)

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.queen.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.key}"},
            json=body,
            timeout=120,
        )


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "tool-box", [f"{ECHO}=echo:", CHAT_MODEL])
        queen.wait_for_model("tool-box", CHAT_MODEL)
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        yield Farm(queen, key)
    finally:
        dep.close()


def assert_valid_call(call: Any, name: str | None = None) -> dict[str, Any]:
    assert call.type == "function"
    assert call.id.startswith("call_")
    if name is not None:
        assert call.function.name == name
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, SCHEMAS[call.function.name])
    return dict(args)


def streamed(stream: Any) -> tuple[str, list[dict[str, Any]], str | None, list[Any]]:
    """Text, whole calls, finish reason and chunks of a streamed chat answer, with the
    pieces checked as OpenAI sends them (head first, then arguments only)."""
    text, calls, finish, chunks = "", {}, None, []
    for chunk in stream:
        chunks.append(chunk)
        assert_openai_shape(
            "CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True)
        )
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        for piece in choice.delta.tool_calls or []:
            if piece.index not in calls:
                assert piece.id and piece.type == "function" and piece.function.name
                calls[piece.index] = {"id": piece.id, "name": piece.function.name, "arguments": ""}
            else:
                assert piece.id is None and piece.function.name is None
            calls[piece.index]["arguments"] += piece.function.arguments or ""
        finish = choice.finish_reason or finish
    return text, [calls[i] for i in sorted(calls)], finish, chunks


# --- the echo engine: the contract end to end ---------------------------------------------


def test_required_call_not_streamed(farm: Farm) -> None:
    resp = farm.client().chat.completions.create(
        model=ECHO,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER, TIME],
        tool_choice="required",
    )
    assert_openai_shape(
        "CreateChatCompletionResponse", resp.model_dump(mode="json", exclude_unset=True)
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert assert_valid_call(call, "get_weather") == {"city": "x", "unit": "celsius"}


def test_named_and_parallel_calls_streamed(farm: Farm) -> None:
    text, calls, finish, _ = streamed(
        farm.client().chat.completions.create(
            model=ECHO,
            messages=[{"role": "user", "content": "call get_time get_weather"}],
            tools=[WEATHER, TIME],
            stream=True,
        )
    )
    assert (text, finish) == ("", "tool_calls")
    assert [c["name"] for c in calls] == ["get_time", "get_weather"]
    for c in calls:
        jsonschema.validate(json.loads(c["arguments"]), SCHEMAS[c["name"]])
    _, calls, _, _ = streamed(
        farm.client().chat.completions.create(
            model=ECHO,
            messages=[{"role": "user", "content": "call get_time get_weather"}],
            tools=[WEATHER, TIME],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    assert [c["name"] for c in calls] == ["get_weather"]


def test_tool_loop_with_echo(farm: Farm) -> None:
    client = farm.client()
    messages: list[Any] = [{"role": "user", "content": "call get_time"}]
    first = client.chat.completions.create(model=ECHO, messages=messages, tools=[TIME])
    (call,) = first.choices[0].message.tool_calls or []
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "It is 12:00 in UTC"})
    final = client.chat.completions.create(model=ECHO, messages=messages, tools=[TIME])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "It is 12:00 in UTC"
    assert final.choices[0].message.tool_calls is None


def test_an_engine_without_logprobs_says_so_naming_the_model(farm: Farm) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        farm.client().chat.completions.create(
            model=ECHO, messages=[{"role": "user", "content": "hi"}], logprobs=True
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "logprobs" and ECHO in body["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"messages": [{"role": "tool", "content": "4C"}]}, "messages[0].tool_call_id"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
                ]
            },
            "tools[0].function.parameters",
        ),
    ],
)
def test_bad_tool_input_is_openai_400(farm: Farm, change: dict[str, Any], param: str) -> None:
    body = {"model": ECHO, "messages": [{"role": "user", "content": "hi"}], **change}
    resp = farm.post(body)
    assert resp.status_code == 400, resp.text
    assert_openai_shape("ErrorResponse", resp.json())
    assert resp.json()["error"]["param"] == param
    assert resp.json()["error"]["type"] == "invalid_request_error"
