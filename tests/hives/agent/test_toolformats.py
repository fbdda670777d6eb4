"""hives/agent/engines/toolformats.py: telling tool-call families apart by their chat
templates, rendering conversations for them, reading their calls as the text grows, and
their grammars, checked on the bundled SmolLM2: under each family's grammar the model's
calls parse back and validate against the schemas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from hives.agent.engines.llamacpp import LlamaCppEngine
from hives.agent.engines.toolformats import (
    FAMILIES,
    CallStream,
    detect,
    expressible,
    invalid_arguments,
    render_messages,
    scan_calls,
)
from hives.agent.engines.tools import tool_request
from hives.spec import ModelSpec
from testkit.live import bundled_gguf

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "unit"],
            "additionalProperties": False,
        },
    },
}
NOTE = {
    "type": "function",
    "function": {
        "name": "add_note",
        "parameters": {
            "type": "object",
            "properties": {
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 12},
                    "minItems": 1,
                    "maxItems": 3,
                },
                "pinned": {"type": "boolean"},
            },
            "required": ["tags", "pinned"],
            "additionalProperties": False,
        },
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, NOTE)}

# The markers llama-server keys on, as they appear in real templates.
TEMPLATES = {
    "hermes": "{% for tool in tools %}{{ tool | tojson }}{% endfor %}<tool_call>\n",
    "mistral": "{%- if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}{% endif %}[TOOL_CALLS]",
    "functionary31": "{% if tools %}Use <function=example_name>{...}</function>{% endif %}",
    "functionary32": "{% if tools %}// Supported function definitions{% endif %}>>>all\n",
    "llama3": "{%- if tools %}Environment: ipython<|start_header_id|>{% endif %}<|python_tag|>",
    "generic": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% endfor %}",
}


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_families_are_told_apart_by_their_templates(family: str) -> None:
    assert detect(TEMPLATES[family]).name == family


def test_a_template_that_renders_tools_in_an_unknown_way_is_generic() -> None:
    assert detect("{% if tools %}{{ tools }}{% endif %}").name == "generic"
    assert detect(None).name == "generic"


SAMPLES = {
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2, '
    '"unit": "celsius"}}\n</tool_call>\n<tool_call>\n{"name": "add_note", "arguments": '
    '{"tags": ["a}"], "pinned": true}}\n</tool_call>',
    "llama3": '{"name": "get_weather", "parameters": {"city": "Oslo", "days": 2, "unit": '
    '"celsius"}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2, '
    '"unit": "celsius"}}, {"name": "add_note", "arguments": {"tags": ["a}"], "pinned": true}}]',
    "functionary31": '<function=get_weather>{"city": "Oslo", "days": 2, "unit": "celsius"}'
    '</function><function=add_note>{"tags": ["a}"], "pinned": true}</function>',
    "functionary32": '>>>get_weather\n{"city": "Oslo", "days": 2, "unit": "celsius"}'
    '>>>add_note\n{"tags": ["a}"], "pinned": true}',
}


@pytest.mark.parametrize("family", sorted(SAMPLES))
def test_calls_are_read_and_stream_append_only(family: str) -> None:
    text = SAMPLES[family]
    calls = scan_calls(FAMILIES[family], text)
    expected = 1 if family == "llama3" else 2
    assert [c[2] for c in calls] == [True] * expected
    assert json.loads(calls[0][1]) == {"city": "Oslo", "days": 2, "unit": "celsius"}
    if expected == 2:
        assert calls[1][0] == "add_note" and json.loads(calls[1][1])["tags"] == ["a}"]
    # fed one character at a time, the pieces add up to the same calls
    stream = CallStream(FAMILIES[family])
    whole: dict[int, dict[str, str]] = {}
    for i in range(1, len(text) + 1):
        for p in stream.feed(text[:i]):
            if "id" in p:
                whole[p["index"]] = {"name": p["function"]["name"], "arguments": ""}
            whole[p["index"]]["arguments"] += p["function"]["arguments"]
    assert [(w["name"], w["arguments"]) for w in whole.values()] == [(c[0], c[1]) for c in calls]


def test_generic_rendering_writes_calls_and_results_as_text() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "add_note", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
    ]
    tools = tool_request({"tools": [WEATHER, NOTE]})
    out, template_tools = render_messages(FAMILIES["generic"], messages, tools)
    assert template_tools is None
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert '"name": "get_weather"' in out[0]["content"]
    assert out[2]["content"].count("<tool_call>") == 2
    assert '{"name": "get_weather", "arguments": {"city": "Oslo"}}' in out[2]["content"]
    assert out[3]["content"] == (
        '<tool_response name="get_weather">\n4C\n</tool_response>\n'
        '<tool_response name="add_note">\nok\n</tool_response>'
    )
    assert all(isinstance(m["content"], str) for m in out)


def test_native_rendering_hands_the_template_objects_and_mistral_ids() -> None:
    messages = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "4C"},
    ]
    tools = tool_request({"tools": [WEATHER]})
    out, template_tools = render_messages(FAMILIES["hermes"], messages, tools)
    assert template_tools == [WEATHER]
    assert out[0]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert out[0]["content"] == ""
    out, _ = render_messages(FAMILIES["mistral"], messages, tools)
    new_id = out[0]["tool_calls"][0]["id"]
    assert len(new_id) == 9 and new_id.isalnum() and out[1]["tool_call_id"] == new_id


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    e = LlamaCppEngine()
    e.load(
        ModelSpec(
            name="smollm2",
            engine="llama.cpp",
            source=bundled_gguf(),
            options={"n_ctx": 2048, "n_threads": 1},
        )
    )
    yield e
    e.unload()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_grammar_yields_calls_that_parse_and_validate(
    engine: LlamaCppEngine, family: str
) -> None:
    engine.family = FAMILIES[family]
    try:
        events = list(
            engine.chat(
                {
                    "messages": [{"role": "user", "content": "Note the weather in Oslo."}],
                    "tools": [WEATHER, NOTE],
                    "tool_choice": "required",
                    "temperature": 0.7,
                    "seed": 5,
                    "max_tokens": 300,
                },
                lambda: False,
            )
        )
    finally:
        engine.family = detect(engine.llm.metadata.get("tokenizer.chat_template"))
    assert events[-1]["finish_reason"] == "tool_calls", events[-3:]
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        assert "text" not in e or not e["text"]
        for p in e.get("tool_calls", []):
            if "id" in p:
                calls[p["index"]] = {"name": p["function"]["name"], "arguments": ""}
            calls[p["index"]]["arguments"] += p["function"]["arguments"]
    assert 1 <= len(calls) <= 2
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_bounded_integers_become_enums_and_the_rest_is_checked_after() -> None:
    schema = {
        "type": "object",
        "properties": {
            "days": {"type": "integer", "minimum": 1, "exclusiveMaximum": 8},
            "year": {"type": "integer", "minimum": 0},
            "ratio": {"type": "number", "maximum": 1},
        },
    }
    out = expressible(schema)
    assert out["properties"]["days"] == {"enum": [1, 2, 3, 4, 5, 6, 7]}
    assert out["properties"]["year"] == schema["properties"]["year"]  # not exact: kept
    fns = [{"name": "f", "parameters": schema}]
    assert invalid_arguments(fns, "f", '{"days": 3, "year": 1, "ratio": 0.5}') is None
    assert "-1" in (invalid_arguments(fns, "f", '{"year": -1}') or "")
    assert "not JSON" in (invalid_arguments(fns, "f", "{") or "")
    assert "not one of the tools" in (invalid_arguments(fns, "g", "{}") or "")


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that serves a JSON Schema and records every request it gets."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = b'{"type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/s.json", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_ref_is_never_fetched_by_the_hive(schema_server: tuple[str, list[str]]) -> None:
    """A `$ref` that is a URL is refused, not fetched from the hive's network (llama.cpp's
    converter would GET an https one with no timeout, jsonschema any URL, file: included)."""
    from hives.agent.engines.base import EngineError

    url, seen = schema_server
    for ref in (url, url.replace("http://", "https://")):
        params = {"type": "object", "properties": {"a": {"$ref": ref}}, "required": ["a"]}
        with pytest.raises(EngineError) as err:
            FAMILIES["generic"].grammar([{"name": "f", "parameters": params}], True)
        assert (err.value.status, err.value.code) == (400, "unsupported_schema")
        why = invalid_arguments([{"name": "f", "parameters": params}], "f", '{"a": "x"}')
        assert why is not None and ref in why
    assert seen == []
