"""The llama.cpp engine on the real SmolLM2 GGUF, in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hives.agent.catalog import DEFAULT_CHAT_MODEL, bundled_spec, parse_model_arg
from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.agent.engines.llamacpp import LlamaCppEngine
from hives.agent.engines.toolformats import held_back as _held_back

MSGS = [{"role": "user", "content": "Say something about bees."}]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    spec = bundled_spec(DEFAULT_CHAT_MODEL)
    assert spec is not None
    eng = get_engine("llama.cpp")
    assert isinstance(eng, LlamaCppEngine)
    eng.load(spec)
    yield eng
    eng.unload()


def run(engine: LlamaCppEngine, **request: Any) -> tuple[str, dict[str, Any]]:
    events = list(engine.chat({"messages": MSGS, **request}, lambda: False))
    done = events[-1]
    assert done["kind"] == "done"
    assert all(e["kind"] == "delta" for e in events[:-1])
    return "".join(e["text"] for e in events[:-1]), done


def test_usage_counts_are_exact(engine: LlamaCppEngine) -> None:
    text, done = run(engine, max_tokens=10, temperature=0)
    prompt = engine.prompt_tokens(MSGS)
    assert done["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 10}
    assert done["finish_reason"] == "length"
    # Re-tokenising the text gives the same count, give or take merges at the edges.
    assert abs(len(engine.llm.tokenize(text.encode(), add_bos=False)) - 10) <= 2


def test_seed_repeats_and_temperature_zero_is_greedy(engine: LlamaCppEngine) -> None:
    a, _ = run(engine, max_tokens=16, temperature=1.2, seed=11)
    b, _ = run(engine, max_tokens=16, temperature=1.2, seed=11)
    assert a == b
    g1, _ = run(engine, max_tokens=16, temperature=0)
    g2, _ = run(engine, max_tokens=16, temperature=0, seed=999)
    assert g1 == g2


def test_stop_sequences_never_leak(engine: LlamaCppEngine) -> None:
    full, _ = run(engine, max_tokens=30, temperature=0)
    stop = full[5:9]
    assert stop.strip()
    text, done = run(engine, max_tokens=30, temperature=0, stop=[stop])
    assert done["finish_reason"] == "stop"
    assert text == full[: full.index(stop)]


def test_cancellation_stops_between_tokens(engine: LlamaCppEngine) -> None:
    seen = []

    def cancelled() -> bool:
        return len(seen) >= 3

    for event in engine.chat({"messages": MSGS, "max_tokens": 200}, cancelled):
        seen.append(event)
        if event["kind"] == "done":
            break
    assert seen[-1]["finish_reason"] == "cancelled"
    assert seen[-1]["usage"]["completion_tokens"] <= 4


def test_prompt_over_the_context_is_refused(engine: LlamaCppEngine) -> None:
    huge = [{"role": "user", "content": "bee " * 5000}]
    with pytest.raises(EngineError) as exc:
        list(engine.chat({"messages": huge}, lambda: False))
    assert exc.value.status == 400
    assert exc.value.code == "context_length_exceeded"


def test_held_back_keeps_possible_stop_prefixes() -> None:
    assert _held_back("hello wor", ["world"]) == 3
    assert _held_back("hello", ["xyz"]) == 0
    assert _held_back("ab", ["abc", "bcd"]) == 2


def test_model_args() -> None:
    spec = parse_model_arg("mine=llama.cpp:/models/x.gguf", device="cuda:0")
    assert (spec.name, spec.engine, spec.source, spec.device) == (
        "mine",
        "llama.cpp",
        "/models/x.gguf",
        "cuda:0",
    )
    with pytest.raises(EngineError):
        parse_model_arg("nonexistent-model")
    with pytest.raises(EngineError):
        get_engine("no-such-engine")
    missing = parse_model_arg("x=llama.cpp:/nope.gguf")
    with pytest.raises(EngineError) as exc:
        LlamaCppEngine().load(missing)
    assert exc.value.code == "model_missing"


def test_json_schema_output_is_enforced(engine: LlamaCppEngine) -> None:
    import json

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    text, done = run(
        engine,
        max_tokens=80,
        temperature=0,
        response_format={"type": "json_schema", "schema": schema},
    )
    assert done["finish_reason"] == "stop"
    value = json.loads(text)
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


# A `$ref` loop becomes a grammar rule that starts with itself: llama.cpp refuses it when
# the sampler is made, and a refused grammar used to be a null sampler that crashed the
# worker (SIGSEGV) on the first token. Now it is the caller's 400, before any token.
REF_LOOP = {
    "type": "object",
    "properties": {"a": {"$ref": "#/$defs/x"}},
    "required": ["a"],
    "$defs": {"x": {"$ref": "#/$defs/y"}, "y": {"$ref": "#/$defs/x"}},
}


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_a_tool_schema_llama_cpp_refuses_is_a_400_not_a_crash(
    engine: LlamaCppEngine, choice: str
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": REF_LOOP}}]
    with pytest.raises(EngineError) as err:
        list(engine.chat({"messages": MSGS, "tools": tools, "tool_choice": choice}, lambda: False))
    assert (err.value.status, err.value.code, err.value.param) == (
        400,
        "unsupported_schema",
        "tools",
    )
    _, done = run(engine, max_tokens=3, temperature=0)  # the engine still answers
    assert done["usage"]["completion_tokens"] >= 1


def test_a_response_format_schema_llama_cpp_refuses_is_a_400_not_a_crash(
    engine: LlamaCppEngine,
) -> None:
    with pytest.raises(EngineError) as err:
        run(engine, max_tokens=5, response_format={"type": "json_schema", "schema": REF_LOOP})
    assert (err.value.status, err.value.code) == (400, "unsupported_schema")
    assert err.value.param == "response_format.json_schema.schema"


def test_json_object_output_is_json_as_far_as_it_goes(engine: LlamaCppEngine) -> None:
    text, _ = run(engine, max_tokens=12, temperature=0, response_format={"type": "json_object"})
    assert text.lstrip().startswith(("{", "["))


def test_an_engine_without_structured_output_refuses_it() -> None:
    from hives.agent.engines.echo import EchoEngine

    with pytest.raises(EngineError) as exc:
        list(
            EchoEngine().chat(
                {"messages": MSGS, "response_format": {"type": "json_object"}}, lambda: False
            )
        )
    assert (exc.value.status, exc.value.param) == (400, "response_format")


def test_slots_serve_jobs_at_the_same_time() -> None:
    """Two slots: two generations interleave, each on its own context."""
    import threading
    from dataclasses import replace

    spec = bundled_spec(DEFAULT_CHAT_MODEL)
    assert spec is not None
    eng = LlamaCppEngine()
    eng.load(replace(spec, options={"slots": 2, "n_ctx": 512}))
    try:
        assert eng.slots == 2
        order: list[str] = []
        barrier = threading.Barrier(2)

        def job(name: str) -> None:
            barrier.wait()
            for e in eng.chat(
                {"messages": MSGS, "max_tokens": 24, "temperature": 0}, lambda: False
            ):
                order.append(name if e["kind"] == "delta" else name + ":done")

        threads = [threading.Thread(target=job, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first_done = min(order.index("a:done"), order.index("b:done"))
        # Both had produced text before either finished.
        assert "a" in order[:first_done] and "b" in order[:first_done]
        assert eng.contexts.qsize() == 2  # both slots returned
    finally:
        eng.unload()


def test_model_options_after_a_question_mark() -> None:
    spec = parse_model_arg(f"{DEFAULT_CHAT_MODEL}?slots=3&n_ctx=1024&flash=true@cuda:1")
    assert spec.device == "cuda:1"
    assert spec.options == {"slots": 3, "n_ctx": 1024, "flash": True}
    with pytest.raises(EngineError):
        parse_model_arg(f"{DEFAULT_CHAT_MODEL}?slots")
