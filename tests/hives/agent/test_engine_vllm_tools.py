"""vLLM's tool calling and log probabilities, without vLLM (CUDA-only, not installable on
these machines): the sampling parameters a request becomes, vLLM's logprob tables in
OpenAI's shape, and the engine's tool path over scripted vLLM outputs (the wiring; the
driver and grammars themselves run on a real model in test_toolformats.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest

from hives.agent.engines.base import EngineError
from hives.agent.engines.toolformats import FAMILIES
from hives.agent.engines.vllm_engine import VLLMEngine, logprob_entries, sampling_kwargs


@dataclass
class Grammar:
    grammar: str | None = None
    json: Any = None
    json_object: bool | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None
    decoded_token: str | None


@dataclass
class Output:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None


@dataclass
class Params:
    kwargs: dict[str, Any] = field(default_factory=dict)
    skip_special_tokens: bool = True


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_logprobs_and_a_grammar_become_sampling_params() -> None:
    kw = sampling_kwargs(
        {"logprobs": True, "top_logprobs": 3}, max_tokens=5, structured_cls=Grammar, grammar="g"
    )
    assert kw["logprobs"] == 3 and kw["_structured"] == Grammar(grammar="g")
    assert "logprobs" not in sampling_kwargs({}, max_tokens=5)
    with pytest.raises(EngineError) as info:
        sampling_kwargs({}, max_tokens=5, structured_cls=None, grammar="g")
    assert info.value.param == "tools"


def test_vllm_logprob_tables_in_openai_shape() -> None:
    tables = [
        {7: Logprob(-0.1, 1, "Hi"), 8: Logprob(-2.5, 2, "Yo"), 9: Logprob(-3.0, 3, None)},
        {5: Logprob(-4.0, 9, " there"), 6: Logprob(-0.5, 1, "!")},
    ]
    out = logprob_entries([7, 5], tables, 2, lambda t: f"<{t}>")
    assert out == [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                {"token": "Yo", "logprob": -2.5, "bytes": [89, 111]},
            ],
        },
        {
            "token": " there",  # sampled, though not in the top 2
            "logprob": -4.0,
            "bytes": list(b" there"),
            "top_logprobs": [{"token": "!", "logprob": -0.5, "bytes": [33]}],
        },
    ]


class Tokenizer:
    chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"

    def apply_chat_template(self, messages: list[dict[str, Any]], **kw: Any) -> str:
        return "".join(str(m["content"]) for m in messages)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def engine(script: list[list[Output]]) -> tuple[VLLMEngine, list[tuple[str | None, int]]]:
    """An engine whose vLLM replays `script` (one list of outputs per request) and records
    each request's grammar and prompt length."""
    e = VLLMEngine()
    e.model_name = "qwen-test"
    e.tokenizer = Tokenizer()
    e.n_ctx = 4096
    e.family = FAMILIES["generic"]
    seen: list[tuple[str | None, int]] = []

    def params(request: dict[str, Any], max_tokens: int, grammar: str | None = None) -> Params:
        return Params(
            sampling_kwargs(request, max_tokens=max_tokens, structured_cls=Grammar, grammar=grammar)
        )

    def outputs(tokens: list[int], p: Params, cancelled: Any) -> Iterator[Output]:
        constraint = p.kwargs.get("_structured")
        seen.append((constraint.grammar if constraint else None, len(tokens)))
        yield from script[len(seen) - 1]

    e._params = params
    e._outputs = outputs  # type: ignore[method-assign]
    return e, seen


def calls(events: list[dict[str, Any]]) -> list[dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for ev in events:
        for p in ev.get("tool_calls", []):
            if "id" in p:
                out[p["index"]] = {"name": p["function"]["name"], "arguments": ""}
            out[p["index"]]["arguments"] += p["function"]["arguments"]
    return list(out.values())


CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'


def test_required_runs_under_the_family_grammar() -> None:
    e, seen = engine(
        [[Output(CALL_TEXT[:30], [1] * 5), Output(CALL_TEXT[30:], [1] * 9, finish_reason="stop")]]
    )
    events = list(
        e.chat(
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [WEATHER],
                "tool_choice": "required",
            },
            lambda: False,
        )
    )
    assert events[-1]["finish_reason"] == "tool_calls"
    assert events[-1]["usage"]["completion_tokens"] == 14
    (call,) = calls(events)
    jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])
    grammar, _ = seen[0]
    assert grammar is not None and '"get_weather' in grammar


def test_auto_restarts_at_the_trigger_under_the_grammar() -> None:
    e, seen = engine(
        [
            [Output("Let me look. ", [1, 2, 3]), Output("<tool_call>\n{", [4, 5])],
            [Output(CALL_TEXT, [1] * 12, finish_reason="stop")],
        ]
    )
    events = list(
        e.chat({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER]}, lambda: False)
    )
    assert "".join(ev.get("text", "") for ev in events) == "Let me look. "
    assert [c["name"] for c in calls(events)] == ["get_weather"]
    assert seen[0][0] is None and seen[1][0] is not None
    assert seen[1][1] == seen[0][1] + len("Let me look. ")  # the text so far is kept


def test_an_invalid_call_is_an_error_not_a_result() -> None:
    bad = CALL_TEXT.replace('{"city": "Oslo"}', '{"town": 3}')
    e, _ = engine([[Output(bad, [1] * 10, finish_reason="stop")]])
    with pytest.raises(EngineError) as info:
        list(
            e.chat(
                {
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": [WEATHER],
                    "tool_choice": "required",
                },
                lambda: False,
            )
        )
    assert info.value.code == "invalid_tool_call" and "qwen-test" in info.value.message


def test_chat_logprobs_from_vllm() -> None:
    table = [{72: Logprob(-0.2, 1, "H")}, {105: Logprob(-0.3, 1, "i")}]
    e, _ = engine([[Output("Hi", [72, 105], table, finish_reason="stop")]])
    events = list(e._stream([1, 2], Params(), lambda: False, {"logprobs": True, "top_logprobs": 1}))
    assert [x["token"] for x in events[0]["logprobs"]] == ["H", "i"]
