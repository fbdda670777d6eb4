"""The Responses API's translation (inference/responses.py): a Responses body becomes the
chat request chat itself would validate, and the worker's chat events become output
items and OpenAI's semantic stream events, numbered in order. (The real queen and hive,
with the official client: tests/e2e/test_e2e_responses.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response

from hives.protocol import EventKind
from inference import responses, schemas
from inference.errors import APIError

CODEX = Path(__file__).parents[1] / "fixtures" / "codex_responses_request.json"


def req(**body: Any) -> schemas.ResponsesRequest:
    body.setdefault("model", "m")
    body.setdefault("input", "hi")
    r = schemas.validate_responses(body)
    responses._check(r)
    return r


def refused(**body: Any) -> APIError:
    with pytest.raises(APIError) as exc:
        r = req(**body)
        responses.chat_request(r)
    assert exc.value.status == 400
    assert exc.value.body()["error"]["type"] == "invalid_request_error"
    return exc.value


def test_a_string_input_with_instructions_is_a_system_and_a_user_message() -> None:
    chat = responses.chat_request(req(input="Hello", instructions="Be brief.", max_output_tokens=7))
    job = schemas.chat_job_request(chat)
    assert job["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert job["max_tokens"] == 7


def test_items_become_chat_messages() -> None:
    items = [
        {"role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                        {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"x":1}'},
        {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "one"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "two"}]},
    ]  # fmt: skip
    messages = responses.items_to_messages(items, param="input")
    assert [m.pop(responses.ORIGIN) for m in messages] == [
        "input[0]", "input[1]", "input[2]", "input[6]", "input[7]"
    ]  # fmt: skip
    assert messages == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "ab"},
        {
            "role": "assistant",
            "content": "c",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"x":1}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
    ]


def test_function_tools_and_choices_become_chat_tools() -> None:
    tool = {"type": "function", "name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {}}, "strict": True}  # fmt: skip
    assert responses._tools([tool]) == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "d",
                         "parameters": {"type": "object", "properties": {}}, "strict": True},
        }
    ]  # fmt: skip
    assert responses._tool_choice({"type": "function", "name": "get_weather"}) == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    assert responses._tool_choice("required") == "required"


def test_text_format_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = responses.chat_request(
        req(text={"format": {"type": "json_schema", "name": "x", "schema": schema, "strict": True}})
    )
    assert schemas.chat_job_request(chat)["response_format"] == {
        "type": "json_schema",
        "schema": schema,
    }
    assert responses.chat_request(req(text={"format": {"type": "text"}})).response_format == {
        "type": "text"
    }


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_tool_type"),
        ({"tools": [{"type": "custom", "name": "apply_patch", "format": {"type": "regex"}}]},
         "tools[0].format", "invalid_value"),
        ({"tools": [{"type": "custom"}]}, "tools[0].name", "missing_required_parameter"),
        ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "t", "input": 1}]},
         "input[0].input", "invalid_value"),
        ({"tools": [{"type": "local_shell"}]}, "tools[0].type", "unsupported_tool_type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
        ({"tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice.type",
         "unsupported_tool_type"),
        ({"input": []}, "input", "invalid_value"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type",
         "unsupported_parameter"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input[0].content[0].type", "unsupported_content"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id",
         "missing_required_parameter"),
        ({"input": 5}, "input", "invalid_value"),
        ({"include": ["message.output_text.logprobs"]}, "include[0]", "unsupported_parameter"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format.schema", "invalid_value"),
        ({"text": {"verbosity": "chatty"}}, "text.verbosity", "invalid_value"),
        ({"background": True}, "background", "unsupported_parameter"),
        ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
        ({"metadata": {"k": 1}}, "metadata.k", "invalid_value"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
        ({"stream_options": {}}, "stream_options", "invalid_value"),
        ({"model": ""}, "model", "invalid_value"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_param(body: dict[str, Any], param: str, code: str) -> None:
    err = refused(**body)
    assert (err.param, err.code) == (param, code), err.message


def test_chat_history_errors_name_the_input_item() -> None:
    err = refused(
        input=[
            {"role": "user", "content": "hi"},
            {"type": "function_call_output", "call_id": "call_9", "output": "x"},
        ]
    )
    assert err.param == "input[1].call_id"
    assert "input[1]" in err.message and "messages[" not in err.message
    err = refused(
        input=[
            {"role": "user", "content": "hi"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"role": "user", "content": "and?"},
        ],
        tools=[{"type": "function", "name": "f"}],
    )
    assert err.param is not None and err.param.startswith("input[1]"), err.param
    err = refused(tools=[{"type": "function", "name": "bad name!"}])
    assert err.param == "tools[0].name", err.param
    err = refused(
        tools=[{"type": "function", "name": "f"}],
        tool_choice={"type": "function", "name": "g"},
    )
    assert err.param is not None and err.param.startswith("tool_choice"), err.param


def test_a_missing_input_is_named() -> None:
    with pytest.raises(APIError) as exc:
        schemas.validate_responses({"model": "m"})
    assert (exc.value.param, exc.value.code) == ("input", "missing_required_parameter")


def test_the_recorded_codex_request_is_accepted() -> None:
    body = json.loads(CODEX.read_text())
    r = req(**body)
    chat = responses.chat_request(r)
    messages = schemas.chat_job_request(chat)["messages"]
    assert [m["role"] for m in messages] == ["system", "system", "user", "user"]
    assert messages[0]["content"] == body["instructions"]
    assert messages[-1]["content"] == "list the files in this repository"
    assert [t.function.name for t in chat.tools or []] == [
        "shell",
        "update_plan",
        "apply_patch",
        "view_image",
    ]


def _run(
    r: schemas.ResponsesRequest, events: list[dict[str, Any]]
) -> tuple[responses.Output, list[dict[str, Any]]]:
    out = responses.Output(r, store=False)
    stream = out.opening()
    for e in events:
        stream += out.step(e)
    stream.append(out.closing())
    return out, stream


def test_text_events_in_openai_order_numbered() -> None:
    _, stream = _run(
        req(),
        [
            {"kind": EventKind.DELTA, "text": "Hel"},
            {"kind": EventKind.DELTA, "text": "lo"},
            {"kind": EventKind.DONE, "finish_reason": "stop",
             "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        ],
    )  # fmt: skip
    assert [e["type"] for e in stream] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))
    final = Response.model_validate(stream[-1]["response"])
    assert final.output_text == "Hello"
    assert final.status == "completed"
    assert final.usage is not None and final.usage.total_tokens == 5
    assert stream[6]["text"] == "Hello"
    assert stream[0]["response"]["status"] == "in_progress"


def test_tool_call_deltas_become_function_call_items() -> None:
    _, stream = _run(
        req(tools=[{"type": "function", "name": "f"}]),
        [
            {"kind": EventKind.DELTA, "text": "Let me look."},
            {"kind": EventKind.DELTA, "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function",
                 "function": {"name": "f", "arguments": ""}}]},
            {"kind": EventKind.DELTA, "tool_calls": [
                {"index": 0, "function": {"arguments": '{"q":'}}]},
            {"kind": EventKind.DELTA, "tool_calls": [
                {"index": 0, "function": {"arguments": ' "x"}'}}]},
            {"kind": EventKind.DELTA, "tool_calls": [
                {"index": 1, "id": "call_b", "function": {"name": "f", "arguments": "{}"}}]},
            {"kind": EventKind.DONE, "finish_reason": "tool_calls",
             "usage": {"prompt_tokens": 3, "completion_tokens": 9}},
        ],
    )  # fmt: skip
    types = [e["type"] for e in stream]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # the message
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # call_a
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_item.added",  # call_b
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = Response.model_validate(stream[-1]["response"])
    assert final.status == "completed"
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_a", "f", '{"q": "x"}'),
        ("call_b", "f", "{}"),
    ]
    assert [e["output_index"] for e in stream if "output_index" in e][-1] == 1 + 1


def test_length_is_incomplete_and_errors_are_failed() -> None:
    _, stream = _run(
        req(max_output_tokens=1),
        [
            {"kind": EventKind.DELTA, "text": "a"},
            {"kind": EventKind.DONE, "finish_reason": "length", "usage": {}},
        ],
    )
    assert stream[-1]["type"] == "response.incomplete"
    assert stream[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert stream[-1]["response"]["output"][0]["status"] == "incomplete"
    out = responses.Output(req(), store=False)
    with pytest.raises(APIError) as exc:
        out.step({"kind": EventKind.ERROR, "status": 400, "message": "no", "param":
                  "response_format", "code": "unsupported_parameter"})  # fmt: skip
    assert exc.value.param == "text.format"
    failed = out.failed(exc.value)[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"] == {"code": "unsupported_parameter", "message": "no"}


APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def test_a_custom_tool_is_a_function_of_one_string_and_its_history_goes_back() -> None:
    r = req(
        tools=[APPLY_PATCH],
        tool_choice={"type": "custom", "name": "apply_patch"},
        input=[
            {"role": "user", "content": "fix it"},
            {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch",
             "input": "*** Begin Patch\n*** End Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"},
        ],
    )  # fmt: skip
    chat = responses.chat_request(r)
    assert chat.tools is not None
    fn = chat.tools[0].function
    assert fn.name == "apply_patch"
    assert fn.parameters == {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's input."}},
        "required": ["input"],
        "additionalProperties": False,
    }
    assert fn.description is not None and '"*** Begin Patch"' in fn.description
    assert responses._tool_choice({"type": "custom", "name": "apply_patch"}) == {
        "type": "function",
        "function": {"name": "apply_patch"},
    }
    messages = schemas.chat_job_request(chat)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    call = messages[1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"input": "*** Begin Patch\n*** End Patch"}
    assert (messages[2]["tool_call_id"], messages[2]["content"]) == ("call_p", "Done!")


def test_a_custom_tool_call_is_answered_as_a_custom_tool_call_item() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"
    args = json.dumps({"input": patch})
    _, stream = _run(
        req(tools=[APPLY_PATCH, {"type": "function", "name": "shell"}]),
        [
            {"kind": EventKind.DELTA, "tool_calls": [
                {"index": 0, "id": "call_p", "type": "function",
                 "function": {"name": "apply_patch", "arguments": args[:9]}}]},
            {"kind": EventKind.DELTA, "tool_calls": [
                {"index": 0, "function": {"arguments": args[9:]}}]},
            {"kind": EventKind.DONE, "finish_reason": "tool_calls",
             "usage": {"prompt_tokens": 3, "completion_tokens": 9}},
        ],
    )  # fmt: skip
    assert [e["type"] for e in stream] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert stream[2]["item"]["type"] == "custom_tool_call" and stream[2]["item"]["input"] == ""
    assert stream[3]["delta"] == patch and stream[4]["input"] == patch
    final = Response.model_validate(stream[-1]["response"])
    (item,) = final.output
    assert item.type == "custom_tool_call"
    assert (item.call_id, item.name, item.input) == ("call_p", "apply_patch", patch)
    assert [t.type for t in final.tools] == ["custom", "function"]
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))
