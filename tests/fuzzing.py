"""Hypothesis strategies for hostile /v1 bodies: a valid body of each endpoint, then
mutated (a field replaced by any JSON value, a field dropped, an unknown field added, a
message or content part mangled). Near-valid bodies reach far deeper into validation
and into the job builders than random JSON does."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Values that have broken JSON APIs before: huge and negative numbers, floats at the
# edges, strings with NULs, surrogates' neighbours, long strings, deep-ish nesting.
_EDGE_NUMBERS = st.sampled_from(
    [0, -1, 1, 2**31, 2**53 + 1, 2**63, -(2**63) - 1, 10**30, 1e308, -1e308, 1e-320, 0.5, -0.0]
)
_EDGE_STRINGS = st.sampled_from(
    ["", " ", "\x00", "\r\n", "🐝" * 50, "a" * 5000, "null", "{}", "${x}", "%s%n", "../../etc"]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _EDGE_NUMBERS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    _EDGE_STRINGS,
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

MODEL = "smollm2-135m-instruct"

VALID_BODIES: dict[str, dict[str, Any]] = {
    "chat": {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
        ],
        "max_tokens": 2,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
        "n": 1,
        "stream": False,
        "response_format": {"type": "text"},
    },
    "completions": {
        "model": MODEL,
        "prompt": "Once upon",
        "max_tokens": 2,
        "temperature": 0.5,
        "stop": "x",
        "echo": False,
    },
    "embeddings": {
        "model": "all-minilm-l6-v2",
        "input": ["one", "two"],
        "encoding_format": "float",
        "dimensions": 8,
    },
    "images": {
        "model": "tiny-sd",
        "prompt": "a bee",
        "n": 1,
        "size": "64x64",
        "response_format": "b64_json",
    },
    "speech": {"model": "piper", "input": "hello", "voice": "alloy", "response_format": "wav"},
}

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "images": "/v1/images/generations",
    "speech": "/v1/audio/speech",
}

# Fields that each endpoint knows, beyond those in its valid body, to be mutated too.
_MORE_FIELDS = {
    "chat": [
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logit_bias",
        "modalities",
    ],
    "completions": ["n", "seed", "suffix", "best_of", "logprobs", "stream", "user"],
    "embeddings": ["user"],
    "images": ["quality", "style", "user", "seed"],
    "speech": ["speed", "instructions"],
}


@st.composite
def _mutate(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    body = json.loads(json.dumps(VALID_BODIES[kind]))
    fields = sorted(set(body) | set(_MORE_FIELDS[kind]))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["set", "drop", "add", "message", "part"]))
        if op == "set":
            body[draw(st.sampled_from(fields))] = draw(JSON_VALUES)
        elif op == "drop" and body:
            body.pop(draw(st.sampled_from(sorted(body))), None)
        elif op == "add":
            body[draw(st.text(max_size=16))] = draw(JSON_VALUES)
        elif op == "message" and kind == "chat" and isinstance(body.get("messages"), list):
            msgs = body["messages"]
            if msgs and isinstance(msgs[-1], dict):
                key = draw(
                    st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "x"])
                )
                msgs[-1][key] = draw(JSON_VALUES)
            else:
                msgs.append(draw(JSON_VALUES))
        elif op == "part" and kind == "chat" and isinstance(body.get("messages"), list):
            msgs = body["messages"]
            if msgs and isinstance(msgs[-1], dict) and isinstance(msgs[-1].get("content"), list):
                parts = msgs[-1]["content"]
                if parts and isinstance(parts[0], dict):
                    key = draw(st.sampled_from(["type", "text", "image_url", "input_audio"]))
                    parts[0][key] = draw(JSON_VALUES)
    return body


def bodies(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Mutated bodies of one endpoint (and, now and then, its valid body)."""
    return st.one_of(st.just(VALID_BODIES[kind]), _mutate(kind))


def raw_bodies() -> st.SearchStrategy[bytes]:
    """Bytes that are not a well-formed object: truncated, non-objects, bad encodings."""
    return st.one_of(
        st.binary(max_size=64),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.sampled_from(
            [
                b"",
                b"{",
                b'{"model": NaN}',
                b'{"a": Infinity}',
                b"[" * 5000,
                b'{"model": "m", "messages": [' + b"[" * 300,
                b"\xff\xfe{}",
                b'{"model": "\xed\xa0\x80"}',
                b'{"n": 1' + b"0" * 5000 + b"}",
            ]
        ),
    )
