"""The Responses API (/v1/responses) on a real queen and hive, with the official `openai`
client: created (streaming and not) on the chat pipeline (metered and audited as chat),
stored only under the tenant's prompt retention, read back, continued with
previous_response_id, listed, deleted, never visible to another tenant; bad input in
OpenAI's error body; a recorded Codex CLI request; the bundled SmolLM2 (text, a stream,
a JSON schema)."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from testkit.live import Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL, Stack

pytestmark = pytest.mark.e2e

MODEL = "talker"
CODEX = Path(__file__).parents[1] / "fixtures" / "codex_responses_request.json"

STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
STREAM_END = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


class Echo:
    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.queen = Queen(dep)
        if not dep.embedded:  # with Redis, Celery writes the requests' audit events
            dep.spawn(["billing", "worker", "--concurrency", "1"], "celery")
        Hive(dep, self.queen, "box", [f"{MODEL}=echo:"])

    def tenant(self, name: str, retention: str = "") -> openai.OpenAI:
        self.dep.rbee("tenant", "create", name)
        if retention:
            self.dep.rbee("tenant", "set", name, "--prompt-retention", retention)
        key = self.dep.rbee("key", "create", "--tenant", name).stdout.strip()
        return openai.OpenAI(base_url=f"{self.queen.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    dep = Deployment()
    try:
        yield Echo(dep)
    finally:
        dep.close()


def types_of(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def check_order(events: list[Any]) -> None:
    types = types_of(events)
    assert types[:4] == STREAM_ORDER, types
    assert types[-4:] == STREAM_END, types
    assert set(types[4:-4]) == {"response.output_text.delta"}, types
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_stored_conversation_retrieve_continue_list_delete(echo: Echo) -> None:
    shop = echo.tenant("shop", retention="contract")
    rival = echo.tenant("rival", retention="contract")

    raw = shop.responses.with_raw_response.create(
        model=MODEL,
        input="bees make honey",
        instructions="Answer briefly.",
        metadata={"ticket": "42"},
        user="bob",
        temperature=0.5,
    )
    first = raw.parse()
    assert first.object == "response" and first.id.startswith("resp_")
    assert first.status == "completed" and first.store is True
    assert first.output_text == "bees make honey"  # the echo engine repeats the last user turn
    assert first.instructions == "Answer briefly." and first.metadata == {"ticket": "42"}
    assert first.temperature == 0.5 and first.user == "bob"
    assert first.usage is not None
    # The system and user messages (the echo engine counts words): 2 + 3
    assert (first.usage.input_tokens, first.usage.output_tokens) == (5, 3)

    # Metered and audited as a chat request, under the tenant.
    request_id = raw.headers["x-request-id"]
    usage_query = (
        "select u.modality, u.model, u.prompt_tokens, u.completion_tokens, u.end_user, t.name "
        "from billing_usageevent u join tenants_tenant t on t.id = u.tenant_id "
        f"where u.request_id = '{request_id}' and u.outcome != 'provisional'"
    )
    audit_query = f"select action, outcome from gdpr_audit_event where request_id = '{request_id}'"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if echo.dep.sql(usage_query) and echo.dep.sql(audit_query):
            break
        time.sleep(0.2)
    assert echo.dep.sql(usage_query) == [("chat", MODEL, 5, 3, "bob", "shop")]
    assert echo.dep.sql(audit_query) == [("inference", "ok")]

    again = shop.responses.retrieve(first.id)
    assert again.model_dump() == first.model_dump()

    # Another tenant sees nothing of it: not to read, delete, list or continue.
    with pytest.raises(openai.NotFoundError):
        rival.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        rival.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        rival.responses.input_items.list(first.id)
    with pytest.raises(openai.BadRequestError) as exc:
        rival.responses.create(model=MODEL, input="x", previous_response_id=first.id)
    assert exc.value.body["param"] == "previous_response_id"  # type: ignore[index]

    # The next turn continues the stored conversation (instructions are not carried).
    second = shop.responses.create(model=MODEL, input="tell me more", previous_response_id=first.id)
    assert second.output_text == "tell me more"
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert second.usage.input_tokens == 3 + 3 + 3  # turn one, its answer, turn two

    items = shop.responses.input_items.list(second.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [  # type: ignore[union-attr]
        ("message", "user", "tell me more")
    ]

    # Streamed: the semantic events in order, numbered; stored before the last event.
    with shop.responses.stream(
        model=MODEL, input="streamed words here", previous_response_id=second.id
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_order(events)
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "streamed words here"
    )
    assert final.status == "completed" and final.output_text == "streamed words here"
    assert shop.responses.retrieve(final.id).output_text == "streamed words here"

    # Deleted: gone for its tenant; the later turns keep their own copy of the history.
    deleted = shop.responses.delete(first.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        shop.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        shop.responses.delete(first.id)
    third = shop.responses.create(model=MODEL, input="last", previous_response_id=second.id)
    assert third.usage is not None and third.usage.input_tokens == 9 + 3 + 1


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Oslo", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                   "required": ["zone"]},
}  # fmt: skip


def test_function_tools_a_loop_streamed_and_not(echo: Echo) -> None:
    """The echo engine calls deterministically (docs/tools.md): `required` or a named
    function always calls; after a tool's output it answers with that output."""
    c = echo.tenant("toolshop", retention="contract")
    first = c.responses.create(
        model=MODEL, input="What is the weather in Oslo?", tools=[WEATHER, TIME],
        tool_choice="required", parallel_tool_calls=False,
    )  # fmt: skip
    assert first.status == "completed"
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Oslo"}  # the schema's first enum
    assert calls[0].call_id and calls[0].status == "completed"
    assert first.output_text == ""

    # The tool's output, continuing the stored conversation: the model answers.
    second = c.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "Sunny, 21 degrees"}],
        tools=[WEATHER, TIME],
    )  # fmt: skip
    assert second.output_text == "Sunny, 21 degrees"
    # The same loop without storing: the whole history sent again, as Codex does.
    stateless = c.responses.create(
        model=MODEL,
        store=False,
        input=[
            {"role": "user", "content": "What is the weather in Oslo?"},
            *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Rain"},
        ],
        tools=[WEATHER, TIME],
    )
    assert stateless.output_text == "Rain"

    # Streamed, a named function and parallel calls: the arguments in pieces.
    with c.responses.stream(
        model=MODEL, input="call get_time get_weather", tools=[WEATHER, TIME],
    ) as stream:  # fmt: skip
        events = list(stream)
        final = stream.get_final_response()
    types = types_of(events)
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert types.count("response.output_item.added") == 2
    assert types.count("response.function_call_arguments.done") == 2
    calls = [o for o in final.output if o.type == "function_call"]
    assert [c.name for c in calls] == ["get_time", "get_weather"]
    for call in calls:
        pieces = "".join(
            e.delta for e in events
            if e.type == "response.function_call_arguments.delta" and e.item_id == call.id
        )  # fmt: skip
        assert pieces == call.arguments and json.loads(pieces)
    named = c.responses.create(
        model=MODEL, input="anything", tools=[WEATHER, TIME],
        tool_choice={"type": "function", "name": "get_time"},
    )  # fmt: skip
    assert [o.name for o in named.output if o.type == "function_call"] == ["get_time"]
    # A tool the request does not offer cannot be chosen.
    with pytest.raises(openai.BadRequestError) as exc:
        c.responses.create(
            model=MODEL, input="x", tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_time"},
        )  # fmt: skip
    assert str(exc.value.body["param"]).startswith("tool_choice")  # type: ignore[index]


def _expire_responses(dep: Deployment) -> None:
    past = "2000-01-01 00:00:00" + ("+00:00" if dep.db_name else "")
    query = f"update inference_storedresponse set expires_at = '{past}'"
    if dep.db_name:
        import psycopg

        with psycopg.connect(dep.env["RBEE_DATABASE_URL"]) as conn:
            conn.execute(query)
    else:
        import sqlite3

        conn = sqlite3.connect(dep.home / "rbee.sqlite3")
        try:
            conn.execute(query)
            conn.commit()
        finally:
            conn.close()


def test_stored_responses_follow_gdpr_export_erasure_and_retention(
    echo: Echo, tmp_path: Path
) -> None:
    c = echo.tenant("gdprshop", retention="contract")
    mine = c.responses.create(model=MODEL, input="carol private words", user="carol")
    other = c.responses.create(model=MODEL, input="dave words", user="dave")

    archive = tmp_path / "export.zip"
    echo.dep.rbee("gdpr", "export", "--subject", "gdprshop:carol", "--out", str(archive))
    with zipfile.ZipFile(archive) as zf:
        records = json.loads(zf.read("data/inference.responses.json"))["records"]
    assert [r["response_id"] for r in records] == [mine.id]
    assert records[0]["output"][0]["content"][0]["text"] == "carol private words"

    erased = json.loads(
        echo.dep.rbee("gdpr", "erase", "--subject", "gdprshop:carol", "--yes").stdout
    )
    stores = {s["store"]: s for s in erased["stores"]}
    assert stores["inference.responses"]["deleted"] == 1
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(mine.id)
    assert c.responses.retrieve(other.id).output_text == "dave words"

    # Past the tenant's retention days: unreadable at once, purged by the retention run.
    _expire_responses(echo.dep)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(other.id)
    out = echo.dep.rbee("gdpr", "retention", "run").stdout
    assert "inference.responses" in out
    assert echo.dep.sql("select count(*) from inference_storedresponse") == [(0,)]


def test_nothing_is_stored_without_a_retention_basis(echo: Echo) -> None:
    plain = echo.tenant("plain")  # prompt retention off: the default
    r = plain.responses.create(model=MODEL, input="not kept")
    assert r.output_text == "not kept" and r.store is False
    with pytest.raises(openai.NotFoundError):
        plain.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as exc:
        plain.responses.create(model=MODEL, input="more", previous_response_id=r.id)
    err = exc.value.body
    assert err["param"] == "previous_response_id"  # type: ignore[index]
    assert "retention" in err["message"]  # type: ignore[index]

    kept = echo.tenant("kept", retention="contract")
    off = kept.responses.create(model=MODEL, input="one", store=False)
    assert off.store is False
    with pytest.raises(openai.NotFoundError):
        kept.responses.retrieve(off.id)
    with pytest.raises(openai.BadRequestError) as exc:
        kept.responses.create(model=MODEL, input="two", previous_response_id=off.id)
    assert exc.value.status_code == 400
    assert echo.dep.sql(
        "select count(*) from inference_storedresponse where response_id = "
        f"'{r.id}' or response_id = '{off.id}'"
    ) == [(0,)]


def test_a_stored_response_is_not_also_kept_as_an_exchange(echo: Echo) -> None:
    """Under a retention basis, a stored response is the request's kept exchange: the
    pipeline keeps no second copy of the conversation (gdpr_storedexchange); without
    `store` the exchange is kept as chat's is."""
    c = echo.tenant("once", retention="contract")
    stored = c.responses.with_raw_response.create(model=MODEL, input="kept once", user="erin")
    unstored = c.responses.with_raw_response.create(
        model=MODEL, input="kept as chat", user="erin", store=False
    )
    assert stored.parse().store is True and unstored.parse().store is False

    def kept(raw: Any) -> list[tuple[Any, ...]]:
        rid = raw.headers["x-request-id"]
        return echo.dep.sql(f"select count(*) from gdpr_storedexchange where request_id = '{rid}'")

    assert kept(unstored) == [(1,)]
    assert kept(stored) == [(0,)]
    assert echo.dep.sql(
        f"select count(*) from inference_storedresponse where response_id = '{stored.parse().id}'"
    ) == [(1,)]


def test_bad_input_in_openai_error_bodies(echo: Echo) -> None:
    c = echo.tenant("typo")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"input": "x", "include": ["file_search_call.results"]}, 400, "include[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
         400, "input[0].content[0].type"),
        ({"input": "x", "max_output_tokens": -1}, 400, "max_output_tokens"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "s",
                                            "schema": {"type": "object"}}}}, 400, "text.format"),
        ({}, 400, "input"),
        ({"input": "x", "model": "no-such-model"}, 404, "model"),
    ]  # fmt: skip
    for body, status, param in cases:
        body = {"model": MODEL, **body}
        with pytest.raises(openai.APIStatusError) as exc:
            c.post("/responses", body=body, cast_to=httpx.Response)
        assert exc.value.status_code == status, (body, exc.value.body)
        err = exc.value.body
        assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}, err
        assert err["param"] == param, (body, err)
        assert err["type"] == "invalid_request_error"
    # The echo engine writes no structured output: the worker's refusal, with our names.
    with pytest.raises(openai.BadRequestError) as exc:
        c.responses.create(
            model=MODEL,
            input="x",
            text={"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
            stream=True,
        )
    bad_key = openai.OpenAI(base_url=f"{echo.queen.url}/v1", api_key="rbee-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.responses.create(model=MODEL, input="x")
    with pytest.raises(openai.AuthenticationError):
        bad_key.responses.retrieve("resp_x")
    with pytest.raises(openai.BadRequestError) as exc:
        c.responses.input_items.list("resp_x", limit=1000)
    r = httpx.post(
        f"{echo.queen.url}/v1/responses",
        content=b"model=x",
        headers={"Authorization": f"Bearer {c.api_key}", "Content-Type": "text/plain"},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The events of a Responses stream, checked: each `event:` line names its data's type."""
    out = []
    name = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
            assert data["type"] == name
            out.append(data)
    return out


def test_a_recorded_codex_cli_request_succeeds(echo: Echo) -> None:
    """Codex CLI's own body (store false, the whole history each turn, function tools,
    reasoning and include as it sends them), posted as Codex posts it."""
    c = echo.tenant("coder")
    body = json.loads(CODEX.read_text())
    body["model"] = MODEL
    headers = {
        "Authorization": f"Bearer {c.api_key}",
        "OpenAI-Beta": "responses=experimental",
        "originator": "codex_cli_rs",
        "session_id": body["prompt_cache_key"],
        "Accept": "text/event-stream",
    }
    url = f"{echo.queen.url}/v1/responses"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    types = [e["type"] for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert final["store"] is False and final["parallel_tool_calls"] is False
    assert final["reasoning"] == {"effort": "medium", "summary": "auto"}
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "list the files in this repository"

    # The next turn: Codex sends the whole history again, with the answer and a tool's
    # call and output (no previous_response_id: store is false).
    body["input"] += [
        *final["output"],
        {"type": "function_call", "call_id": "call_1", "name": "shell",
         "arguments": json.dumps({"command": ["bash", "-lc", "ls"], "workdir": "/home/dev/shop"})},
        {"type": "function_call_output", "call_id": "call_1",
         "output": json.dumps({"output": "README.md\nsrc\n", "metadata": {"exit_code": 0}})},
        {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                         "text": "thanks, now stop"}]},
    ]  # fmt: skip
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        events = sse_events(r)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "thanks, now stop"
    with pytest.raises(openai.NotFoundError):  # store false: nothing kept
        c.responses.retrieve(events[-1]["response"]["id"])


FREEFORM_APPLY_PATCH = {  # as Codex CLI sends apply_patch to the models it gives it freeform
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do "
    "not wrap the patch in JSON.",
    "format": {
        "type": "grammar",
        "syntax": "lark",
        "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\n'
        'end_patch: "*** End Patch" LF?\nhunk: /(.|\\n)+/\n%import common.LF\n',
    },
}


def test_codex_freeform_apply_patch_is_a_custom_tool_call(echo: Echo) -> None:
    """Codex's freeform apply_patch (a `custom` tool): the model calls it, the answer is a
    custom_tool_call with its free-text input, and the next turn's custom_tool_call and
    custom_tool_call_output items continue the conversation."""
    c = echo.tenant("patcher")
    body = json.loads(CODEX.read_text())
    body["model"] = MODEL
    body["tools"] = [t if t["name"] != "apply_patch" else FREEFORM_APPLY_PATCH
                     for t in body["tools"]]  # fmt: skip
    body["input"].append({"role": "user", "content": "call apply_patch"})
    url = f"{echo.queen.url}/v1/responses"
    headers = {"Authorization": f"Bearer {c.api_key}", "Accept": "text/event-stream"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r:
        assert r.status_code == 200, r.read()
        events = sse_events(r)
    types = [e["type"] for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ], types
    final = events[-1]["response"]
    (call,) = final["output"]
    assert call["type"] == "custom_tool_call" and call["name"] == "apply_patch"
    assert call["input"] == "x"  # the echo engine's sample string (docs/tools.md)
    assert events[4]["input"] == call["input"] and events[4]["item_id"] == call["id"]
    assert FREEFORM_APPLY_PATCH in final["tools"]

    body["input"] += [
        call,
        {"type": "custom_tool_call_output", "call_id": call["call_id"],
         "output": "Success. Updated a.txt"},
    ]  # fmt: skip
    answer = c.responses.create(**{**body, "stream": False})
    assert answer.output_text == "Success. Updated a.txt"


# --- the bundled SmolLM2 ------------------------------------------------------------------


def test_smollm2_answers_streams_and_follows_a_json_schema(stack: Stack) -> None:
    c = stack.client()
    r = c.responses.create(
        model=CHAT_MODEL,
        instructions="You are a helpful assistant.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}],
        max_output_tokens=16,
        temperature=0.2,
    )
    assert r.status in ("completed", "incomplete")
    assert r.output_text.strip()
    assert r.usage is not None and 0 < r.usage.output_tokens <= 16
    if r.status == "incomplete":
        assert r.incomplete_details is not None
        assert r.incomplete_details.reason == "max_output_tokens"

    with c.responses.stream(
        model=CHAT_MODEL, input="Tell me about bees.", max_output_tokens=24
    ) as stream:
        events = list(stream)
    # The last event carries the response: completed, or incomplete at the token limit
    # (OpenAI's own order; the SDK's get_final_response waits for a completed one only).
    final = events[-1].response  # type: ignore[union-attr]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3
    assert "".join(deltas) == final.output_text
    assert types_of(events)[:4] == STREAM_ORDER
    assert types_of(events)[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "legs": {"type": "integer"}},
        "required": ["name", "legs"],
        "additionalProperties": False,
    }
    # Greedy, with room to close the object: sampled, the small model sometimes wrote a
    # name long enough to reach a 64-token limit first (incomplete, not wrong).
    r = c.responses.create(
        model=CHAT_MODEL,
        input="Describe a bee as JSON.",
        text={
            "format": {"type": "json_schema", "name": "animal", "schema": schema, "strict": True}
        },
        max_output_tokens=160,
        temperature=0,
    )
    assert r.status == "completed", (r.incomplete_details, r.output_text)
    jsonschema.validate(json.loads(r.output_text), schema)


def test_smollm2_calls_a_function_tool_that_validates(stack: Stack) -> None:
    """SmolLM2's template has no tools: the generic path constrains a required call to the
    tool's schema (docs/tools.md), and the Responses API carries it as a function_call."""
    c = stack.client()
    r = c.responses.create(
        model=CHAT_MODEL,
        input="What is the weather in Rome?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=64,
    )
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and len(calls) >= 1, r.output
    assert calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])  # type: ignore[arg-type]
    with c.responses.stream(
        model=CHAT_MODEL, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required",
        max_output_tokens=64,
    ) as stream:  # fmt: skip
        events = list(stream)
    final = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type == "response.completed"
    streamed = [o for o in final.output if o.type == "function_call"]
    pieces = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert streamed and pieces == "".join(o.arguments for o in streamed)
    jsonschema.validate(json.loads(streamed[0].arguments), WEATHER["parameters"])  # type: ignore[arg-type]
