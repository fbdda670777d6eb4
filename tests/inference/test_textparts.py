"""inference/textparts.py: the worker's tool-call pieces and log probabilities, checked
and put together as OpenAI sends them."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from hives.protocol import EventKind
from inference.chat import ChatFormat
from inference.completions import CompletionFormat
from inference.pipeline import TextFormat, relay
from inference.textparts import (
    ToolCalls,
    allowed_functions,
    clean_logprobs,
    completion_logprobs,
)

FG = frozenset({"f", "g"})


def tools_request(**extra: Any) -> dict[str, Any]:
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("f", "g")
    ]
    return {"messages": [], "tools": tools, **extra}


def head(index: int, name: str, cid: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {
        "index": index,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    if cid is not None:
        piece["id"] = cid
    return piece


def test_pieces_become_openai_stream_pieces_and_whole_calls() -> None:
    calls = ToolCalls(FG)
    head = {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert calls.feed([head]) == [head]
    assert calls.feed([{"index": 0, "function": {"arguments": '{"a": '}}]) == [
        {"index": 0, "function": {"arguments": '{"a": '}}
    ]
    # a second call, starting without an id: the queen names it
    second = calls.feed([{"index": 1, "function": {"name": "g", "arguments": "{}"}}])
    assert second[0]["id"].startswith("call_") and len(second[0]["id"]) == 29
    calls.feed([{"index": 0, "function": {"arguments": "1}"}}])
    whole = calls.calls()
    assert [c["function"] for c in whole] == [
        {"name": "f", "arguments": '{"a": 1}'},
        {"name": "g", "arguments": "{}"},
    ]
    assert whole[0]["id"] == "call_a" and whole[1]["id"] == second[0]["id"]


def test_malformed_pieces_are_dropped_not_passed_on() -> None:
    calls = ToolCalls(FG)
    assert calls.feed("nope") == []
    assert calls.feed([1, None, {"index": "0"}, {"index": -1, "function": {"name": "f"}}]) == []
    assert calls.feed([{"index": 0, "function": {"arguments": "{}"}}]) == []  # no name
    assert calls.feed([{"index": 10**6, "function": {"name": "f"}}]) == []
    assert calls.feed([{"index": 0, "function": {"name": "f", "arguments": 5}}]) == []
    assert calls.calls() == []


def test_logprobs_are_checked_and_shaped() -> None:
    raw = [
        {
            "token": "Hi",
            "logprob": -0.5,
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.5},
                {"token": "Yo", "logprob": float("-inf")},
            ],
        },
        {"token": "x", "logprob": float("nan")},
        {"token": 3, "logprob": -1},
        "junk",
    ]
    assert clean_logprobs(raw) == [
        {
            "token": "Hi",
            "logprob": -0.5,
            "bytes": [72, 105],
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                {"token": "Yo", "logprob": -9999.0, "bytes": [89, 111]},
            ],
        }
    ]
    assert clean_logprobs(None) == []


def test_completion_shape_counts_offsets() -> None:
    entries = clean_logprobs(
        [
            {"token": "ab", "logprob": -1.0, "top_logprobs": [{"token": "ab", "logprob": -1.0}]},
            {"token": "c", "logprob": -2.0, "top_logprobs": []},
        ]
    )
    assert completion_logprobs(entries, 5) == {
        "tokens": ["ab", "c"],
        "token_logprobs": [-1.0, -2.0],
        "top_logprobs": [{"ab": -1.0}, {}],
        "text_offset": [5, 7],
    }


def test_the_functions_a_request_allows() -> None:
    assert allowed_functions({"messages": []}) == frozenset()
    assert allowed_functions(tools_request()) == FG
    assert allowed_functions(tools_request(tool_choice="auto")) == FG
    assert allowed_functions(tools_request(tool_choice="required")) == FG
    assert allowed_functions(tools_request(tool_choice="none")) == frozenset()
    named = {"type": "function", "function": {"name": "g"}}
    assert allowed_functions(tools_request(tool_choice=named)) == {"g"}


def test_a_call_the_request_did_not_allow_never_reaches_the_client() -> None:
    """The hive's calls are checked against what the client sent, not trusted: a function
    it never declared, any call after tool_choice "none" or without tools, another
    function than the named one, and all of such a call's later pieces are dropped."""
    args = {"index": 0, "function": {"arguments": "{}"}}
    for request in (
        {"messages": []},
        tools_request(tool_choice="none"),
        tools_request(tool_choice={"type": "function", "function": {"name": "g"}}),
    ):
        calls = ToolCalls.for_request(request)
        assert calls.feed([head(0, "f", "call_1")]) == [], request
        assert calls.feed([args]) == [], request
        assert calls.calls() == []
        assert calls.finish_reason("tool_calls") == "stop"
    calls = ToolCalls.for_request(tools_request())
    assert calls.feed([head(0, "rm_rf", "call_1"), args]) == []
    assert calls.calls() == []


def test_one_call_without_parallel_calls_and_indexes_and_ids_are_the_queens() -> None:
    calls = ToolCalls.for_request(tools_request(parallel_tool_calls=False))
    assert calls.feed([head(3, "f", "call_1")]) == [{**head(0, "f"), "id": "call_1"}]
    assert calls.feed([head(4, "g", "call_2")]) == []  # a second call is not allowed
    assert calls.finish_reason("tool_calls") == "tool_calls"
    calls = ToolCalls.for_request(tools_request())
    first = calls.feed([head(7, "g", "call_1"), {"index": 7, "function": {"arguments": "{}"}}])
    assert [p["index"] for p in first] == [0, 0]  # numbered from 0 as OpenAI does
    second = calls.feed([head(2, "f", "call_1")])  # the same id twice: the queen renames
    assert second[0]["index"] == 1 and second[0]["id"] != "call_1"
    long_id = calls.feed([head(5, "g", "c" * 257)])  # one the client could not send back
    assert len(long_id[0]["id"]) == 29
    assert [c["function"]["name"] for c in calls.calls()] == ["g", "f", "g"]


async def _sse(
    events: list[dict[str, Any]], request: dict[str, Any], fmt: TextFormat | None = None
) -> list[Any]:
    async def source() -> AsyncGenerator[dict[str, Any], None]:
        for e in events:
            yield e

    fmt = fmt or ChatFormat("chatcmpl-1", "m")
    raw = b"".join([c async for c in relay(source(), fmt, False, ToolCalls.for_request(request))])
    lines = [ln[len(b"data: ") :] for ln in raw.split(b"\n\n") if ln]
    assert lines[-1] == b"[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


async def test_a_stream_says_tool_calls_only_when_calls_were_passed_on() -> None:
    done = {"kind": EventKind.DONE, "finish_reason": "tool_calls", "usage": {}}
    call = {"kind": EventKind.DELTA, "tool_calls": [head(0, "f", "call_1")]}
    chunks = await _sse([call, done], tools_request(tool_choice="none"))
    assert all("tool_calls" not in c["choices"][0]["delta"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    chunks = await _sse([call, done], tools_request())
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_1"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_stream_carries_log_probabilities_only_when_asked() -> None:
    """A hive's logprobs reach the client only if it asked, as a whole answer does."""
    lp = [{"token": "Hi", "logprob": -0.5, "top_logprobs": []}]
    events = [
        {"kind": EventKind.DELTA, "text": "Hi", "logprobs": lp},
        {"kind": EventKind.DELTA, "text": "", "logprobs": lp},
        {"kind": EventKind.DONE, "finish_reason": "stop", "usage": {}},
    ]
    for fmt in (ChatFormat("c", "m"), CompletionFormat("c", "m", "")):
        chunks = await _sse(events, {"messages": []}, fmt)
        assert all(c["choices"][0]["logprobs"] is None for c in chunks), chunks
        assert len(chunks) == (3 if isinstance(fmt, ChatFormat) else 2)  # no empty deltas
    chunks = await _sse(events, {"messages": []}, ChatFormat("c", "m", logprobs=True))
    assert chunks[1]["choices"][0]["logprobs"]["content"][0]["token"] == "Hi"
