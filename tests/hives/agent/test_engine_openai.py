"""The openai engine against a real (fake, in-process) OpenAI-compatible server: what it
sends, what it relays, how upstream errors become OpenAI errors, and its health."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.agent.engines.openai_engine import OpenAIEngine
from hives.agent.workerenv import upstream_key_env, worker_env
from hives.protocol import Capability, EventKind
from hives.spec import ModelArg, ModelSpec
from testkit.fakeupstream import TRANSCRIPT, WORDS, FakeUpstream
from testkit.live import free_port

KEY = "sk-upstream-test-key"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream(["fake-model"], api_key=KEY)
    try:
        yield up
    finally:
        up.close()


def engine_for(url: str, monkeypatch: pytest.MonkeyPatch, **options: Any) -> OpenAIEngine:
    monkeypatch.setenv("UPSTREAM_TEST_KEY", KEY)
    opts = {"model": "fake-model", "api_key_env": "UPSTREAM_TEST_KEY", **options}
    engine = get_engine("openai")
    assert isinstance(engine, OpenAIEngine)
    engine.load(ModelSpec(name="up", engine="openai", source=url, options=opts))
    return engine


@pytest.fixture
def engine(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIEngine]:
    e = engine_for(upstream.url, monkeypatch, read_timeout=1)
    try:
        yield e
    finally:
        e.unload()


def chat(engine: OpenAIEngine, content: str, **extra: Any) -> list[dict[str, Any]]:
    request = {"messages": [{"role": "user", "content": content}], **extra}
    return list(engine.run("chat", request, lambda: False))


def test_the_model_argument_with_a_url_parses() -> None:
    arg = ModelArg.parse(
        "llama=openai:http://127.0.0.1:11434/v1?model=llama3.1:8b&api_key_env=OLLAMA_KEY"
    )
    spec = arg.to_spec(arg.device or "cpu")  # type: ignore[arg-type]
    assert (spec.name, spec.engine, spec.source) == ("llama", "openai", "http://127.0.0.1:11434/v1")
    assert spec.options == {"model": "llama3.1:8b", "api_key_env": "OLLAMA_KEY"}
    assert spec.capability is Capability.TEXT_GEN
    emb = ModelArg.parse("e=openai:https://api.example.com/v1#embedding?model=x@cpu")
    assert (emb.source, emb.capability, emb.options) == (
        "https://api.example.com/v1",
        Capability.EMBEDDING,
        {"model": "x"},
    )


def test_chat_streams_16_chunks_with_the_upstream_usage(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    events = chat(engine, "say something nice", temperature=0.5, max_tokens=None, stop=["zz"])
    deltas = [e["text"] for e in events if e["kind"] == EventKind.DELTA]
    assert "".join(deltas) == " ".join(WORDS) and len(deltas) == 16
    done = events[-1]
    assert done["kind"] == EventKind.DONE and done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 16}
    sent = upstream.requests[-1]
    body = sent.json()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "fake-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.5 and body["stop"] == ["zz"] and "max_tokens" not in body


def test_completions_and_a_length_finish(engine: OpenAIEngine) -> None:
    events = list(engine.run("completion", {"prompt": "once upon", "max_tokens": 4}, lambda: False))
    assert "".join(e["text"] for e in events[:-1]) == "w1 w2 w3 w4"
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4}


def test_an_upstream_without_usage_is_metered_by_counting(engine: OpenAIEngine) -> None:
    done = chat(engine, "!nousage abcdefgh")[-1]
    assert done["usage"] == {"prompt_tokens": 4, "completion_tokens": 16}
    # Counts that are not counts: ours instead, never a failed job at the stream's end.
    done = chat(engine, "!badusage abcdefgh")[-1]
    assert done["kind"] == EventKind.DONE
    assert done["usage"] == {"prompt_tokens": 4, "completion_tokens": 16}


def test_embeddings_images_transcription_and_speech_pass_through(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    [done] = engine.run("embedding", {"input": ["a b", "c"], "dimensions": 4}, lambda: False)
    assert [len(v) for v in done["result"]["embeddings"]] == [4, 4]
    assert done["usage"] == {"prompt_tokens": 3}
    assert upstream.requests[-1].json()["dimensions"] == 4

    [done] = engine.run("image", {"prompt": "a cat", "n": 2, "size": "64x64"}, lambda: False)
    assert len(done["result"]["images"]) == 2 and done["usage"] == {"images": 2}
    assert base64.b64decode(done["result"]["images"][0]).startswith(b"\x89PNG")

    audio = base64.b64encode(b"RIFF....WAVE").decode()
    request = {"audio_b64": audio, "filename": "a.wav", "language": "en", "prompt": None}
    [done] = engine.run("transcription", request, lambda: False)
    assert done["result"]["text"] == TRANSCRIPT and done["usage"] == {"seconds": 1.5}
    assert done["result"]["segments"][0]["end"] == 1.5
    sent = upstream.requests[-1]
    assert sent.path == "/v1/audio/transcriptions"
    assert b'name="language"\r\n\r\nen' in sent.body and b"RIFF....WAVE" in sent.body

    speech = {"input": "hello", "voice": "alloy", "response_format": "mp3", "speed": 1.0}
    events = list(engine.run("speech", speech, lambda: False))
    audio_bytes = b"".join(base64.b64decode(e["b64"]) for e in events if e["kind"] == "audio")
    assert len(audio_bytes) == 4096
    assert events[-1]["usage"]["characters"] == 5


@pytest.mark.parametrize(
    ("status", "ours", "code"),
    [
        (400, 400, "injected_400"),
        (422, 400, "injected_422"),
        (429, 429, "injected_429"),
        (401, 502, "upstream_auth_failed"),
        (403, 502, "upstream_auth_failed"),
        (404, 502, "upstream_not_found"),
        (500, 502, "upstream_error"),
        (503, 503, "upstream_unavailable"),
        (504, 504, "upstream_timeout"),
    ],
)
def test_upstream_errors_become_openai_errors(
    engine: OpenAIEngine, status: int, ours: int, code: str
) -> None:
    with pytest.raises(EngineError) as err:
        chat(engine, f"!status {status}")
    assert (err.value.status, err.value.code) == (ours, code)
    assert f"injected {status}" in err.value.message


def test_a_silent_upstream_times_out_as_504(engine: OpenAIEngine) -> None:
    with pytest.raises(EngineError) as err:
        chat(engine, "!sleep 3")  # the engine waits 1 s (read_timeout=1)
    assert (err.value.status, err.value.code) == (504, "upstream_timeout")


def test_a_stream_broken_off_is_a_502(engine: OpenAIEngine) -> None:
    events: list[dict[str, Any]] = []
    with pytest.raises(EngineError) as err:
        for event in engine.run(
            "chat", {"messages": [{"role": "user", "content": "!drop"}]}, lambda: False
        ):
            events.append(event)
    assert (err.value.status, err.value.code) == (502, "upstream_error")
    assert [e["text"] for e in events] == ["w1", " w2"]


def test_a_cancelled_job_closes_its_upstream_request(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    before = upstream.closed_early
    seen: list[dict[str, Any]] = []
    request = {"messages": [{"role": "user", "content": "!slow 0.2"}]}
    for event in engine.run("chat", request, lambda: len(seen) >= 2):
        seen.append(event)
    assert [e["kind"] for e in seen] == ["delta", "delta", "done"]
    assert seen[-1]["finish_reason"] == "cancelled"
    deadline = time.monotonic() + 5
    while upstream.closed_early == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.closed_early == before + 1  # the upstream saw the connection go


def test_an_unreachable_upstream_is_a_503_and_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(f"http://127.0.0.1:{free_port()}/v1", monkeypatch)
    assert "cannot be reached" in engine.health()
    with pytest.raises(EngineError) as err:
        chat(engine, "hi")
    assert (err.value.status, err.value.code) == (503, "upstream_unavailable")


def test_health_follows_the_upstream(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = FakeUpstream(["fake-model"], api_key=KEY)
    try:
        engine = engine_for(own.url, monkeypatch)
        assert engine.health() == ""
        own.down()
        assert "cannot be reached" in engine.health()
        own.up()
        assert engine.health() == ""
    finally:
        own.close()
    missing = engine_for(upstream.url, monkeypatch, model="other-model")
    assert "does not list the model 'other-model'" in missing.health()
    unchecked = engine_for(upstream.url, monkeypatch, model="other-model", check_model=False)
    assert unchecked.health() == ""
    monkeypatch.setenv("WRONG_KEY", "sk-wrong")
    wrong = get_engine("openai")
    wrong.load(
        ModelSpec(
            name="up",
            engine="openai",
            source=upstream.url,
            options={"model": "fake-model", "api_key_env": "WRONG_KEY"},
        )
    )
    assert "refused this model's credentials (401)" in wrong.health()


def test_load_refuses_a_missing_key_a_stored_key_and_credentials_in_the_url(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)

    def load(source: str, **options: Any) -> None:
        get_engine("openai").load(
            ModelSpec(name="up", engine="openai", source=source, options=options)
        )

    with pytest.raises(EngineError, match=r"\$NOT_SET_ANYWHERE, which is not set"):
        load(upstream.url, api_key_env="NOT_SET_ANYWHERE")
    with pytest.raises(EngineError, match="api_key option would be stored"):
        load(upstream.url, api_key="sk-plain")
    with pytest.raises(EngineError, match="credentials in the upstream URL"):
        load("http://user:pw@127.0.0.1:1/v1")
    with pytest.raises(EngineError, match="base URL"):
        load("/models/llama.gguf")
    with pytest.raises(EngineError, match="must be positive"):
        load(upstream.url, max_connections=0)


def test_only_the_named_key_reaches_the_worker_and_only_when_granted() -> None:
    hive_env = {"PATH": "/bin", "OLLAMA_KEY": "sk-1", "OTHER_KEY": "sk-2", "RBEE_HIVE_TOKEN": "t"}
    own = upstream_key_env({"api_key_env": "OLLAMA_KEY"}, hive_env, assigned=False)
    assert own == "OLLAMA_KEY"
    env = worker_env(hive_env, key_env=own)
    assert env["OLLAMA_KEY"] == "sk-1" and "OTHER_KEY" not in env and "RBEE_HIVE_TOKEN" not in env
    # A model the queen assigned names a variable the hive's operator did not grant.
    assert upstream_key_env({"api_key_env": "OLLAMA_KEY"}, hive_env, assigned=True) == ""
    granted = {**hive_env, "RBEE_HIVE_UPSTREAM_KEYS": "OLLAMA_KEY, X"}
    assert upstream_key_env({"api_key_env": "OLLAMA_KEY"}, granted, assigned=True) == "OLLAMA_KEY"
    # rbee's own secrets never, whoever asks.
    assert upstream_key_env({"api_key_env": "RBEE_HIVE_TOKEN"}, hive_env, assigned=False) == ""
    assert "OLLAMA_KEY" not in worker_env(hive_env)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Oslo", "Rome"]}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def calls_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls the pieces of `events` make, assembled as the contract says."""
    calls: dict[int, dict[str, Any]] = {}
    for event in events:
        for piece in event.get("tool_calls") or []:
            if "id" in piece:
                assert piece["index"] == len(calls) and piece["type"] == "function"
                calls[piece["index"]] = {
                    "id": piece["id"],
                    "name": piece["function"]["name"],
                    "arguments": piece["function"]["arguments"],
                }
            else:
                assert set(piece) == {"index", "function"}
                calls[piece["index"]]["arguments"] += piece["function"]["arguments"]
    return [calls[i] for i in sorted(calls)]


def test_tools_are_relayed_and_the_upstreams_calls_come_back_as_pieces(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    tools = {"tools": [WEATHER, TIME], "tool_choice": "auto", "parallel_tool_calls": True}
    events = chat(engine, "call get_weather get_time", **tools)
    sent = upstream.last("/v1/chat/completions").json()
    assert (sent["tools"], sent["tool_choice"], sent["parallel_tool_calls"]) == (
        [WEATHER, TIME],
        "auto",
        True,
    )
    assert calls_of(events) == [
        {"id": "call_fake0", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"id": "call_fake1", "name": "get_time", "arguments": "{}"},
    ]
    assert not any(e.get("text") for e in events)
    assert events[-1]["finish_reason"] == "tool_calls"
    # A named function, and the answer after the tool's result: the history goes upstream
    # exactly as the job carries it.
    named = {"type": "function", "function": {"name": "get_time"}}
    events = chat(engine, "what time is it", tools=[WEATHER, TIME], tool_choice=named)
    assert [c["name"] for c in calls_of(events)] == ["get_time"]
    history = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny and 21 degrees"},
    ]
    events = list(engine.run("chat", {"messages": history, "tools": [WEATHER]}, lambda: False))
    assert "".join(e.get("text", "") for e in events) == "sunny and 21 degrees"
    assert events[-1]["finish_reason"] == "stop" and not calls_of(events)
    assert upstream.last("/v1/chat/completions").json()["messages"] == history


def test_calls_from_servers_that_send_them_whole_and_without_an_index(
    engine: OpenAIEngine,
) -> None:
    events = chat(engine, "call get_weather get_time !loosecalls", tools=[WEATHER, TIME])
    assert calls_of(events) == [
        {"id": "call_fake0", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"id": "call_fake1", "name": "get_time", "arguments": "{}"},
    ]
    assert events[-1]["finish_reason"] == "tool_calls"  # the upstream said "stop"


def test_malformed_call_pieces_are_dropped() -> None:
    from hives.agent.engines.openai_engine import _CallPieces

    pieces = _CallPieces()
    got = pieces.feed(
        [
            "not a piece",
            {"index": 0, "function": {"arguments": "{}"}},  # starts a call with no name
            {"index": 3, "id": "c", "function": {"name": "f", "arguments": {"a": 1}}},
            {"index": 3, "function": {"arguments": 5}},  # arguments not text
            {"function": {"arguments": "x"}},  # continues the call before
        ]
    )
    assert got == [
        {
            "index": 0,
            "id": "c",
            "type": "function",
            "function": {"name": "f", "arguments": '{"a": 1}'},
        },
        {"index": 0, "function": {"arguments": "x"}},
    ]
    assert pieces.feed({"index": 0}) == [] and pieces.count == 1


def test_log_probabilities_are_relayed_in_the_chat_shape(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    events = chat(engine, "hi", logprobs=True, top_logprobs=2, max_tokens=2)
    sent = upstream.last("/v1/chat/completions").json()
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    assert [e["logprobs"] for e in events[:-1]] == [
        [
            {
                "token": "w1",
                "logprob": -0.1,
                "bytes": list(b"w1"),
                "top_logprobs": [
                    {"token": "w1", "logprob": -0.1, "bytes": list(b"w1")},
                    {"token": " alt", "logprob": -5.0, "bytes": list(b" alt")},
                ],
            }
        ],
        [
            {
                "token": " w2",
                "logprob": -0.2,
                "bytes": list(b" w2"),
                "top_logprobs": [
                    {"token": " w2", "logprob": -0.2, "bytes": list(b" w2")},
                    {"token": " alt", "logprob": -5.0, "bytes": list(b" alt")},
                ],
            }
        ],
    ]
    # The legacy API's `logprobs: N` and its shape, turned into the same entries.
    request = {"prompt": "once", "max_tokens": 2, "logprobs": True, "top_logprobs": 1}
    events = list(engine.run("completion", request, lambda: False))
    assert upstream.last("/v1/completions").json()["logprobs"] == 1
    assert [e["logprobs"] for e in events[:-1]] == [
        [{"token": "w1", "logprob": -0.1, "top_logprobs": [{"token": "w1", "logprob": -0.1}]}],
        [{"token": " w2", "logprob": -0.2, "top_logprobs": [{"token": " w2", "logprob": -0.2}]}],
    ]
    # Not asked: nothing sent for them, nothing relayed.
    events = chat(engine, "hi", max_tokens=2)
    body = upstream.last("/v1/chat/completions").json()
    assert "logprobs" not in body and "tools" not in body
    assert not any("logprobs" in e for e in events)


def test_the_key_is_never_in_an_error(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that quotes the key it refused: the message names the refusal, not the key.
    monkeypatch.setenv("WRONG_KEY", "sk-wrong-0123456789")
    wrong = get_engine("openai")
    wrong.load(
        ModelSpec(
            name="up",
            engine="openai",
            source=upstream.url,
            options={"model": "fake-model", "api_key_env": "WRONG_KEY"},
        )
    )
    assert "Incorrect API key provided: ***" in wrong.health()
    with pytest.raises(EngineError) as err:
        chat(wrong, "hi")  # type: ignore[arg-type]
    assert "sk-wrong-0123456789" not in err.value.message and "***" in err.value.message
    # A key with a line break (a file read into a variable) would be quoted by the HTTP
    # library's error: surrounding white space is dropped, and a key a header cannot
    # carry is refused at load without quoting it.
    monkeypatch.setenv("PADDED_KEY", f"  {KEY}\n")
    padded = engine_for(upstream.url, monkeypatch, api_key_env="PADDED_KEY")
    assert chat(padded, "hi")[-1]["finish_reason"] == "stop"
    monkeypatch.setenv("BROKEN_KEY", "sk-half\nsk-other-half")
    with pytest.raises(EngineError) as err:
        engine_for(upstream.url, monkeypatch, api_key_env="BROKEN_KEY")
    assert "cannot carry" in err.value.message and "sk-half" not in err.value.message


def test_an_image_url_is_fetched_without_the_key_and_must_be_an_image(
    engine: OpenAIEngine, upstream: FakeUpstream
) -> None:
    elsewhere = FakeUpstream(["x"])
    try:
        pixel = f"http://127.0.0.1:{elsewhere.port}/files/pixel.png"
        [done] = engine.run("image", {"prompt": f"!imageurl {pixel}", "n": 1}, lambda: False)
        assert base64.b64decode(done["result"]["images"][0]).startswith(b"\x89PNG")
        fetched = elsewhere.last("/files/pixel.png")
        assert "authorization" not in fetched.headers  # the key goes to its upstream alone
        # A URL that gives something else (an internal service's JSON) is not passed on.
        other = f"http://127.0.0.1:{elsewhere.port}/files/state"
        with pytest.raises(EngineError) as err:
            list(engine.run("image", {"prompt": f"!imageurl {other}"}, lambda: False))
        assert (err.value.status, err.value.message) == (
            502,
            "the upstream server's image URL did not give an image",
        )
    finally:
        elsewhere.close()
    # On the upstream itself, the key goes with it.
    own = f"{upstream.url.removesuffix('/v1')}/files/pixel.png"
    [done] = engine.run("image", {"prompt": f"!imageurl {own}"}, lambda: False)
    assert upstream.last("/files/pixel.png").headers["authorization"] == f"Bearer {KEY}"


def test_answers_over_the_size_limit_are_refused(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = engine_for(upstream.url, monkeypatch, max_response_bytes=100_000)
    try:
        with pytest.raises(EngineError) as err:
            list(small.run("embedding", {"input": ["!huge 5000000"]}, lambda: False))
        assert (err.value.status, err.value.code) == (502, "upstream_too_large")
        [done] = small.run("embedding", {"input": ["fine"]}, lambda: False)
        assert len(done["result"]["embeddings"]) == 1
        with pytest.raises(EngineError) as err:
            chat(small, "!longline 3000000")
        assert err.value.code == "upstream_too_large"
    finally:
        small.unload()
    # One endless line of an event stream, under the answer's limit.
    big = engine_for(upstream.url, monkeypatch)
    try:
        with pytest.raises(EngineError) as err:
            chat(big, "!longline 12000000")
        assert err.value.code == "upstream_too_large" and "stream line" in err.value.message
    finally:
        big.unload()


def test_a_cancelled_job_leaves_an_upstream_gone_silent_at_once(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client left while the upstream says nothing (read_timeout is 300 s): the job's
    thread is woken, its request closed, and the job ends as cancelled."""
    engine = engine_for(upstream.url, monkeypatch)
    seen: list[dict[str, Any]] = []
    request = {"messages": [{"role": "user", "content": "!stall"}]}

    def run() -> None:
        for event in engine.run("chat", request, lambda: len(seen) >= 2):
            seen.append(event)

    import threading

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)  # a liveness bound, ten times under read_timeout
    try:
        assert not thread.is_alive(), "the job still waits on the silent upstream"
        assert [e["kind"] for e in seen] == ["delta", "delta", "done"]
        assert seen[-1]["finish_reason"] == "cancelled"
        # The engine serves on, on the same pool of connections.
        assert chat(engine, "hi")[-1]["finish_reason"] == "stop"
    finally:
        engine.unload()
