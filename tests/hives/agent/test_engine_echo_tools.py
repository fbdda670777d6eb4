"""The echo engine's deterministic tool calls (docs/tools.md), which other tests rely on
to drive tool flows without a model."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from hives.agent.engines.base import EngineError
from hives.agent.engines.echo import EchoEngine
from hives.agent.engines.tools import sample_arguments
from hives.spec import ModelSpec

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 3},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1},
                "hourly": {"type": "boolean"},
            },
            "required": ["city", "unit", "days"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def engine() -> EchoEngine:
    e = EchoEngine()
    e.load(ModelSpec(name="echo-tools", engine="echo", source=""))
    return e


def run(request: dict[str, Any]) -> list[dict[str, Any]]:
    return list(engine().chat(request, lambda: False))


def calls_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole calls from the streamed pieces (as the queen assembles them)."""
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        for p in e.get("tool_calls", []):
            if p["index"] not in calls:
                assert set(p) == {"index", "id", "type", "function"}
                calls[p["index"]] = {"id": p["id"], "name": p["function"]["name"], "arguments": ""}
            else:
                assert set(p) == {"index", "function"}
            calls[p["index"]]["arguments"] += p["function"]["arguments"]
    return [calls[i] for i in sorted(calls)]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_required_calls_the_first_tool_with_schema_valid_arguments() -> None:
    events = run({"messages": user("hello"), "tools": [WEATHER, TIME], "tool_choice": "required"})
    assert events[-1]["finish_reason"] == "tool_calls"
    (call,) = calls_of(events)
    assert call["name"] == "get_weather"
    args = json.loads(call["arguments"])
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    assert args == {"city": "xxx", "unit": "c", "days": 1}


def test_a_named_choice_calls_that_function() -> None:
    events = run(
        {
            "messages": user("call get_weather"),
            "tools": [WEATHER, TIME],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        }
    )
    assert [c["name"] for c in calls_of(events)] == ["get_time"]


def test_auto_answers_text_unless_asked_to_call() -> None:
    events = run({"messages": user("hello there"), "tools": [WEATHER], "tool_choice": "auto"})
    assert "".join(e.get("text", "") for e in events) == "hello there"
    assert events[-1]["finish_reason"] == "stop"
    events = run({"messages": user("Call get_time please"), "tools": [WEATHER, TIME]})
    assert [c["name"] for c in calls_of(events)] == ["get_time"]


def test_parallel_calls_and_their_switch() -> None:
    request = {"messages": user("call get_time, get_weather"), "tools": [WEATHER, TIME]}
    calls = calls_of(run(request))
    assert [c["name"] for c in calls] == ["get_time", "get_weather"]
    assert len({c["id"] for c in calls}) == 2
    calls = calls_of(run({**request, "parallel_tool_calls": False}))
    assert [c["name"] for c in calls] == ["get_time"]


def test_none_never_calls() -> None:
    events = run({"messages": user("call get_time"), "tools": [TIME], "tool_choice": "none"})
    assert not calls_of(events) and events[-1]["finish_reason"] == "stop"


def test_after_a_tool_result_it_answers_with_the_result() -> None:
    messages = [
        *user("call get_time"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "It is noon"},
    ]
    events = run({"messages": messages, "tools": [TIME]})
    assert "".join(e.get("text", "") for e in events) == "It is noon"
    assert events[-1]["finish_reason"] == "stop"


def test_no_logprobs_from_echo() -> None:
    with pytest.raises(EngineError) as info:
        run({"messages": user("hi"), "logprobs": True})
    assert (info.value.status, info.value.param) == (400, "logprobs")
    assert "echo-tools" in info.value.message


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "properties": {"a": {"type": "array", "minItems": 2, "items": {"type": "number"}}},
            "required": ["a"],
        },
        {
            "type": "object",
            "properties": {"a": {"anyOf": [{"type": "null"}, {"type": "string"}]}},
            "required": ["a"],
        },
        {
            "type": "object",
            "properties": {
                "o": {"type": "object", "properties": {"k": {"const": 3}}, "required": ["k"]}
            },
            "required": ["o"],
        },
        {
            "type": "object",
            "properties": {"t": {"type": ["null", "integer"], "minimum": 5}},
            "required": ["t"],
        },
    ],
)
def test_sample_arguments_validate(schema: dict[str, Any]) -> None:
    jsonschema.validate(sample_arguments(schema), schema)
