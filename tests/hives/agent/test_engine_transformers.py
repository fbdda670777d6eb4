"""The transformers engine on a tiny random Llama built here (no Hub needed).

The model talks gibberish, but it is saved and loaded like a real one, and its
greedy output is checked against transformers' own generate(), so the KV-cache
loop, the detokenizer, usage counts and stop handling are all exercised for real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.agent.engines.transformers_engine import TransformersEngine
from hives.spec import ModelSpec
from testkit.tinylm import build_tiny_lm

MSGS = [{"role": "user", "content": "Tell me about bees and their honey."}]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def engine(tiny_lm: Path) -> Iterator[TransformersEngine]:
    eng = get_engine("transformers")
    assert isinstance(eng, TransformersEngine)
    eng.load(ModelSpec(name="tiny", engine="transformers", source=str(tiny_lm)))
    yield eng
    eng.unload()


def run(
    engine: TransformersEngine, task: str = "chat", cancelled: Any = None, **request: Any
) -> tuple[list[str], dict[str, Any]]:
    if task == "chat":
        request.setdefault("messages", MSGS)
    events = list(engine.run(task, request, cancelled or (lambda: False)))
    done = events[-1]
    assert done["kind"] == "done"
    assert all(e["kind"] == "delta" and e["text"] for e in events[:-1])
    return [e["text"] for e in events[:-1]], done


def reference_greedy(engine: TransformersEngine, prompt: list[int], n: int) -> list[int]:
    import torch

    out = engine.model.generate(
        torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n
    )
    return [int(t) for t in out[0, len(prompt) :]]


def test_streams_exactly_what_generate_would_greedily(engine: TransformersEngine) -> None:
    deltas, done = run(engine, max_tokens=24, temperature=0)
    prompt = engine.chat_prompt_tokens(MSGS)
    assert done["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 24}
    assert done["finish_reason"] == "length"
    assert len(deltas) > 5  # streamed piece by piece, not in one lump
    expected = reference_greedy(engine, prompt, 24)
    assert engine.eos_ids.isdisjoint(expected)  # (the tiny model's greedy path never ends)
    assert "".join(deltas) == engine.tokenizer.decode(expected, skip_special_tokens=True)


def test_seed_repeats_and_temperature_zero_is_greedy(engine: TransformersEngine) -> None:
    a, _ = run(engine, max_tokens=16, temperature=1.5, seed=11)
    b, _ = run(engine, max_tokens=16, temperature=1.5, seed=11)
    c, _ = run(engine, max_tokens=16, temperature=1.5, seed=12)
    assert a == b and "".join(a) != "".join(c)
    g1, _ = run(engine, max_tokens=16, temperature=0)
    g2, _ = run(engine, max_tokens=16, temperature=0, seed=999, top_p=0.5)
    assert g1 == g2
    p, _ = run(engine, max_tokens=16, temperature=0, frequency_penalty=2.0, presence_penalty=2.0)
    assert "".join(p) != "".join(g1)  # greedy repeats itself; the penalties break that


def test_stop_sequences_never_leak(engine: TransformersEngine) -> None:
    full = "".join(run(engine, max_tokens=40, temperature=0)[0])
    # two printable characters past the start (they straddle a token boundary here)
    start = next(
        i
        for i in range(1, len(full) - 3)
        if full[i : i + 2].isascii() and full[i : i + 2].isprintable()
    )
    stop = full[start : start + 2]
    deltas, done = run(engine, max_tokens=40, temperature=0, stop=[stop, "never-there"])
    text = "".join(deltas)
    assert done["finish_reason"] == "stop"
    assert text == full[: full.index(stop)]
    assert all(stop not in d for d in deltas)
    assert done["usage"]["completion_tokens"] < 40


def test_completion_defaults_to_16_tokens(engine: TransformersEngine) -> None:
    # Greedy, so that a sampled end-of-text cannot stop it short of the default.
    _, done = run(engine, "completion", prompt="bees make honey", temperature=0)
    assert done["usage"]["completion_tokens"] == 16
    assert done["usage"]["prompt_tokens"] == len(engine.completion_prompt_tokens("bees make honey"))
    # `echo` is the queen's business (it prepends the prompt), never the engine's.
    echoed, _ = run(engine, "completion", prompt="bees make honey", echo=True, temperature=0)
    plain, _ = run(engine, "completion", prompt="bees make honey", temperature=0)
    assert echoed == plain


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_object"}, {"type": "json_schema", "schema": {"type": "object"}}],
)
def test_response_format_is_refused(engine: TransformersEngine, response_format: Any) -> None:
    with pytest.raises(EngineError) as err:
        engine.chat({"messages": MSGS, "response_format": response_format}, lambda: False)
    assert (err.value.status, err.value.code, err.value.param) == (
        400,
        "unsupported_parameter",
        "response_format",
    )
    # plain text is fine
    run(engine, max_tokens=2, response_format={"type": "text"})


def test_context_overflow_is_refused_and_max_tokens_fits_the_rest(
    engine: TransformersEngine,
) -> None:
    with pytest.raises(EngineError) as err:
        engine.complete({"prompt": "bees " * 200}, lambda: False)
    assert (err.value.status, err.value.code) == (400, "context_length_exceeded")
    assert "128" in err.value.message
    prompt = "bees " * 50
    n = len(engine.completion_prompt_tokens(prompt))
    _, done = run(engine, "completion", prompt=prompt, max_tokens=1000, temperature=0)
    assert done["usage"]["completion_tokens"] == 128 - n
    assert done["finish_reason"] == "length"


def test_cancellation_stops_between_tokens(engine: TransformersEngine) -> None:
    calls = 0

    def cancelled() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    _, done = run(engine, max_tokens=50, temperature=0, cancelled=cancelled)
    assert done["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] == 3


def test_no_chat_template_is_a_400(tiny_lm: Path, tmp_path: Path) -> None:
    eng = TransformersEngine()
    eng.load(ModelSpec(name="tiny", engine="transformers", source=str(tiny_lm)))
    eng.tokenizer.chat_template = None
    with pytest.raises(EngineError) as err:
        eng.chat({"messages": MSGS}, lambda: False)
    assert err.value.status == 400
    eng.unload()


def test_memory_estimate_does_not_load(tiny_lm: Path) -> None:
    eng = TransformersEngine()
    spec = ModelSpec(name="tiny", engine="transformers", source=str(tiny_lm), options={"n_ctx": 0})
    assert 100_000 < eng.memory_estimate_bytes(spec) < 1_000_000
    assert eng.model is None


def test_logprobs_of_greedy_tokens(engine: TransformersEngine) -> None:
    events = list(
        engine.run(
            "chat",
            {
                "messages": MSGS,
                "max_tokens": 6,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": 2,
            },
            lambda: False,
        )
    )
    entries = [e for ev in events[:-1] for e in ev.get("logprobs", [])]
    assert len(entries) == events[-1]["usage"]["completion_tokens"] == 6
    greedy = reference_greedy(engine, engine.chat_prompt_tokens(MSGS), 6)
    assert [e["token"] for e in entries] == [engine.tokenizer.decode([t]) for t in greedy]
    for e in entries:
        assert len(e["top_logprobs"]) == 2 and e["top_logprobs"][0]["token"] == e["token"]
        assert e["logprob"] == pytest.approx(e["top_logprobs"][0]["logprob"]) and e["logprob"] <= 0


def test_a_named_call_is_forced_to_its_function(engine: TransformersEngine) -> None:
    """No grammar sampler here: the call's opening and name are forced, the arguments are
    the model's (gibberish from this random model: cut by max_tokens, or refused as
    invalid, never passed off as a valid call)."""
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    request = {
        "messages": MSGS,
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "max_tokens": 8,
        "temperature": 0,
    }
    template = engine.tokenizer.chat_template
    # a Hermes-style template (the markers in a comment): the tiny context has no room
    # for the generic path's system prompt
    engine.tokenizer.chat_template = template + "{# tools: <tool_call> #}"
    try:
        events = list(engine.run("chat", request, lambda: False))
    except EngineError as exc:
        assert exc.code == "invalid_tool_call"
        return
    finally:
        engine.tokenizer.chat_template = template
    heads = [p for ev in events for p in ev.get("tool_calls", []) if "id" in p]
    assert [h["function"]["name"] for h in heads] == ["get_time"]
    assert events[-1]["finish_reason"] in ("length", "tool_calls")
