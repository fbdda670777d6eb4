"""Chat bodies with tools, tool history and logprobs: what is accepted, what the worker
receives (docs/tools.md), and each bad input as OpenAI's 400 naming its param."""

from __future__ import annotations

from typing import Any

import pytest

from inference import schemas
from inference.errors import APIError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **extra}


def refused(data: dict[str, Any]) -> APIError:
    with pytest.raises(APIError) as info:
        schemas.validate_chat(data)
    assert info.value.status == 400
    return info.value


def test_tools_reach_the_worker_as_openai_defines_them() -> None:
    req = schemas.validate_chat(
        body(
            tools=[WEATHER, {"type": "function", "function": {"name": "now", "extra": 1}}],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
        )
    )
    job = schemas.chat_job_request(req)
    assert job["tools"] == [
        WEATHER,
        # no client extras; the empty parameter list spelled out
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert job["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert job["parallel_tool_calls"] is False


def test_defaults_auto_and_parallel() -> None:
    job = schemas.chat_job_request(schemas.validate_chat(body(tools=[WEATHER])))
    assert (job["tool_choice"], job["parallel_tool_calls"]) == ("auto", True)


def test_a_request_without_tools_is_unchanged_for_the_worker() -> None:
    job = schemas.chat_job_request(schemas.validate_chat(body()))
    assert not {"tools", "tool_choice", "parallel_tool_calls", "logprobs"} & set(job)
    assert job["messages"] == [{"role": "user", "content": "Hi"}]


def test_tool_history_travels_in_the_chat_wire_format() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "4C"}]},
        {"role": "user", "content": "Thanks"},
    ]
    job = schemas.chat_job_request(schemas.validate_chat(body(messages=messages, tools=[WEATHER])))
    assert job["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "4C", "tool_call_id": "call_1"},
        {"role": "user", "content": "Thanks"},
    ]


def test_logprobs_reach_the_worker() -> None:
    job = schemas.chat_job_request(schemas.validate_chat(body(logprobs=True, top_logprobs=3)))
    assert (job["logprobs"], job["top_logprobs"]) == (True, 3)
    comp = schemas.completion_job_request(
        schemas.validate_completion({"model": "m", "prompt": "x", "logprobs": 0})
    )
    assert (comp["logprobs"], comp["top_logprobs"]) == (True, 0)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": []}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "has space"}}]},
            "tools[0].function.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "x" * 65}}]},
            "tools[0].function.name",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
            "tools[0].function.parameters",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ]
            },
            "tools[0].function.parameters",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object", "required": 3}},
                    }
                ]
            },
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER] * 129}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_bad_tools_are_400_naming_the_param(extra: dict[str, Any], param: str) -> None:
    assert refused(body(**extra)).param == param


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        # a tool message with no id / answering nothing / a call never made
        ([{"role": "tool", "content": "4C"}], "messages[0].tool_call_id"),
        ([{"role": "tool", "tool_call_id": "call_1", "content": "4C"}], "messages[0].tool_call_id"),
        (
            [
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_2", "content": "4C"},
            ],
            "messages[1].tool_call_id",
        ),
        # a call left unanswered
        (
            [
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "user", "content": "and?"},
            ],
            "messages[0].tool_calls",
        ),
        ([{"role": "assistant", "content": None, "tool_calls": [CALL]}], "messages[0].tool_calls"),
        # answered twice
        (
            [
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "4C"},
                {"role": "tool", "tool_call_id": "call_1", "content": "4C"},
            ],
            "messages[2].tool_call_id",
        ),
        ([{"role": "user", "content": "x", "tool_calls": [CALL]}], "messages[0].tool_calls"),
        (
            [{"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]}],
            "messages[0].tool_calls[0].type",
        ),
        (
            [{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f"}}]}],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {"role": "assistant", "content": None, "tool_calls": [CALL, CALL]},
            ],
            "messages[0].tool_calls",
        ),
    ],
)
def test_bad_tool_history_is_400_naming_the_message(
    messages: list[dict[str, Any]], param: str
) -> None:
    err = refused(body(messages=messages, tools=[WEATHER]))
    assert err.param == param, err.message


def test_an_unanswered_call_is_named_in_the_message() -> None:
    err = refused(
        body(
            messages=[{"role": "assistant", "content": None, "tool_calls": [CALL]}], tools=[WEATHER]
        )
    )
    assert "call_1" in err.message


def test_tool_choice_none_keeps_the_tools_for_the_template() -> None:
    job = schemas.chat_job_request(schemas.validate_chat(body(tools=[WEATHER], tool_choice="none")))
    assert job["tool_choice"] == "none" and job["tools"] == [WEATHER]


def test_completions_refuse_logprobs_of_an_echoed_prompt() -> None:
    with pytest.raises(APIError) as info:
        schemas.validate_completion({"model": "m", "prompt": "x", "logprobs": 1, "echo": True})
    assert info.value.param == "logprobs"


def _with_ref(ref: str, key: str = "$ref") -> dict[str, Any]:
    return {"type": "object", "properties": {"a": {key: ref}, "b": {"type": "string"}}}


@pytest.mark.parametrize(
    ("ref", "key"),
    [
        ("http://169.254.169.254/latest/meta-data/", "$ref"),
        ("https://example.org/schema.json", "$ref"),
        ("file:///etc/passwd", "$ref"),
        ("other.json#/x", "$ref"),
        ("https://example.org/s.json", "$dynamicRef"),
    ],
)
def test_a_schema_that_refers_outside_itself_is_400(ref: str, key: str) -> None:
    """llama.cpp's converter and jsonschema fetch a `$ref` that is a URL (llama.cpp with no
    timeout): from the hive's network, on a tenant's word. Only references inside the
    schema itself ("#/...") are accepted, for tools and for response_format."""
    tool = {"type": "function", "function": {"name": "f", "parameters": _with_ref(ref, key)}}
    err = refused(body(tools=[tool]))
    assert err.param == "tools[0].function.parameters"
    assert ref in err.message
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": _with_ref(ref, key)}}
    assert refused(body(response_format=rf)).param == "response_format.json_schema.schema"


def test_references_inside_the_schema_are_accepted() -> None:
    local = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/a"}, "b": {"$ref": "#"}},
        "$defs": {"a": {"type": "string"}},
    }
    tool = {"type": "function", "function": {"name": "f", "parameters": local}}
    assert schemas.chat_job_request(schemas.validate_chat(body(tools=[tool])))["tools"]
