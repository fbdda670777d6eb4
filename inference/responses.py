"""POST /v1/responses (OpenAI's Responses API: what Codex CLI and the Agents SDK speak),
and GET / DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items.

Not a second pipeline: a Responses request is translated into the chat request the chat
endpoint would build (`schemas.validate_chat`, `chat.work`), so authentication, limits,
Rhai admission and routing, dispatch, metering, audit and kept exchanges are the chat
endpoint's (inference/pipeline.py), and the worker runs the same chat task. What differs
is here: the body (input items, instructions, function tools, text.format, reasoning,
previous_response_id), and how the worker's chat events (text deltas, tool-call deltas
in OpenAI's chat wire format: docs/tools.md) become Responses output items, or OpenAI's
semantic stream events (response.created ... response.completed, each numbered).

A response is stored (`store`, the default) only where the tenant's prompt retention
gives a basis for it (gdpr/exchanges.py: off by default, "consent" for end users who
consented, "contract"); then it can be read back, deleted, continued with
`previous_response_id`, expires with the tenant's retention days and is part of its end
user's export and erasure (inference/retention.py). Otherwise the answer says
`"store": false` and a `previous_response_id` is refused with a clear 400.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

from hives.models import CatalogModel
from hives.protocol import EventKind, Task
from inference import chat, schemas
from inference import selectors as inference_selectors
from inference import services as inference_services
from inference.errors import APIError, bad_request, from_event
from inference.pipeline import (
    Call,
    Resource,
    Work,
    authenticate,
    bearer,
    endpoint,
    opened,
    read_json,
    streaming,
    token_usage,
)
from inference.schemas import ResponsesRequest
from inference.textparts import ToolCalls
from kernel.aio import db
from tenants.selectors import Caller

logger = logging.getLogger("inference")

# --- the body ----------------------------------------------------------------------------

MAX_METADATA_PAIRS = 16
# What `include` may ask for: our models write no reasoning items, so there is no
# encrypted reasoning to include (Codex CLI asks for it on every turn).
INCLUDABLE = ("reasoning.encrypted_content",)
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
REASONING_SUMMARIES = ("auto", "concise", "detailed")


def _refuse(param: str, what: str) -> APIError:
    return bad_request(
        f"'{param}' is not supported: {what}.", param=param, code="unsupported_parameter"
    )


def parse(request: HttpRequest) -> ResponsesRequest:
    req = schemas.validate_responses(read_json(request))
    _check(req)
    if req.previous_response_id is None:  # else its history decides (`bind`, then `work`)
        chat_request(req)  # the input's own errors, before the model is even looked up
    return req


def _check(req: ResponsesRequest) -> None:
    if isinstance(req.input, list) and not req.input and req.previous_response_id is None:
        raise bad_request(
            "Invalid value for 'input': the list is empty.", param="input", code="invalid_value"
        )
    if req.background:
        raise _refuse("background", "responses run while the request is open")
    if req.conversation is not None:
        raise _refuse("conversation", "use previous_response_id to continue a conversation")
    if req.prompt is not None:
        raise _refuse("prompt", "this server keeps no prompt templates")
    if req.top_logprobs:
        raise _refuse("top_logprobs", "log probabilities are not returned")
    if req.max_tool_calls is not None:
        raise _refuse("max_tool_calls", "only function tools are offered, all called by you")
    if req.stream_options is not None and not req.stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    for i, what in enumerate(req.include or ()):
        if what not in INCLUDABLE:
            raise bad_request(
                f"Invalid value for 'include[{i}]': {what!r} is not supported by this server "
                f"(supported: {', '.join(INCLUDABLE)}).",
                param=f"include[{i}]",
                code="unsupported_parameter",
            )
    _check_metadata(req.metadata)
    _check_reasoning(req.reasoning)
    _check_text(req.text)


def _check_text(text: dict[str, Any] | None) -> None:
    """text: its format (translated by `_response_format`) and verbosity, a hint that
    OpenAI documents for its GPT-5 models: accepted, echoed, no effect here."""
    for name in text or {}:
        if name not in ("format", "verbosity"):
            raise bad_request(
                f"Unknown parameter: 'text.{name}'.", param=f"text.{name}", code="unknown_parameter"
            )
    verbosity = (text or {}).get("verbosity")
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise bad_request(
            f"Invalid value for 'text.verbosity': {verbosity!r} is not one of 'low', 'medium', "
            "'high'.",
            param="text.verbosity",
            code="invalid_value",
        )


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if not metadata:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(
            f"Invalid value for 'metadata': at most {MAX_METADATA_PAIRS} key-value pairs.",
            param="metadata",
            code="invalid_value",
        )
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise bad_request(
                f"Invalid value for 'metadata.{key[:64]}': keys are at most 64 characters "
                "and values at most 512.",
                param="metadata",
                code="invalid_value",
            )


def _check_reasoning(reasoning: dict[str, Any] | None) -> None:
    """OpenAI documents `reasoning` as options for reasoning models: our models write no
    separate reasoning, so a valid one is accepted, echoed and has no effect (as with
    effort "none"); an invalid one is a 400."""
    if not reasoning:
        return
    for name, allowed in (
        ("effort", REASONING_EFFORTS),
        ("summary", REASONING_SUMMARIES),
        ("generate_summary", REASONING_SUMMARIES),
    ):
        value = reasoning.get(name)
        if value is not None and value not in allowed:
            raise bad_request(
                f"Invalid value for 'reasoning.{name}': {value!r} is not one of "
                f"{', '.join(repr(a) for a in allowed)}.",
                param=f"reasoning.{name}",
                code="invalid_value",
            )
    for name in reasoning:
        if name not in ("effort", "summary", "generate_summary"):
            raise bad_request(
                f"Unknown parameter: 'reasoning.{name}'.",
                param=f"reasoning.{name}",
                code="unknown_parameter",
            )


# --- previous_response_id: the tenant's stored conversation ------------------------------


def bind(req: ResponsesRequest, caller: Caller) -> ResponsesRequest:
    """The stored conversation `previous_response_id` continues (the caller's tenant's
    only). Sync (database): runs in the pipeline's preparation thread."""
    if req.previous_response_id is None:
        return req
    if caller.prompt_retention == "off":
        raise bad_request(
            "'previous_response_id' cannot be used: this organization's data retention "
            "settings do not allow responses to be stored. Send the whole conversation in "
            "'input' (with 'store': false) instead.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    row = inference_selectors.stored_response_get(
        tenant_id=caller.tenant_id, response_id=req.previous_response_id
    )
    if row is None:
        raise bad_request(
            f"Previous response with id '{req.previous_response_id}' not found. Only "
            "responses created with 'store' enabled (and kept under this organization's "
            "data retention) can be continued.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    req._history = [*row.history, *row.input_items, *row.body.get("output", [])]
    return req


# --- the translation to the chat request -------------------------------------------------


def _texts(content: Any, where: str) -> str:
    """The text of a message item's content: a string, or input_text / output_text
    parts (refusal parts count as text, as the model wrote them)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(
            f"Invalid value for '{where}': a string or a list of content parts is required.",
            param=where,
            code="invalid_value",
        )
    text = []
    for j, part in enumerate(content):
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype in ("input_text", "output_text", "text"):
            value = part.get("text")
        elif ptype == "refusal":
            value = part.get("refusal")
        elif ptype in ("input_image", "input_file", "input_audio"):
            raise bad_request(
                f"Content parts of type '{ptype}' are not supported by this model; only "
                "text parts are.",
                param=f"{where}[{j}].type",
                code="unsupported_content",
            )
        else:
            raise bad_request(
                f"Invalid value for '{where}[{j}].type': {ptype!r}.",
                param=f"{where}[{j}].type",
                code="invalid_value",
            )
        if not isinstance(value, str):
            raise bad_request(
                f"Invalid value for '{where}[{j}]': its text must be a string.",
                param=f"{where}[{j}]",
                code="invalid_value",
            )
        text.append(value)
    return "".join(text)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(
            f"Invalid value for '{where}.{key}': a non-empty string is required.",
            param=f"{where}.{key}",
            code="invalid_value" if key in item else "missing_required_parameter",
        )
    return value


# The key under which items_to_messages notes the input item a message came from (taken
# out before the chat request is validated; errors name that item).
ORIGIN = "_from"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def items_to_messages(items: list[dict[str, Any]], *, param: str) -> list[dict[str, Any]]:
    """Responses input items as chat messages: messages by role (developer as system, as
    OpenAI's chat does for models without a developer role), function calls as an
    assistant message's tool_calls (consecutive calls in one message), their outputs as
    tool messages. Reasoning items carry nothing our models read and are skipped."""
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise bad_request(
                f"Invalid value for '{where}': an input item must be an object.",
                param=where,
                code="invalid_value",
            )
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise bad_request(
                    f"Invalid value for '{where}.role': {role!r} is not one of "
                    "'user', 'assistant', 'system', 'developer'.",
                    param=f"{where}.role",
                    code="invalid_value",
                )
            text = _texts(item.get("content"), f"{where}.content")
            messages.append({"role": ROLES[role], "content": text, ORIGIN: where})
        elif kind in ("function_call", "custom_tool_call"):
            if kind == "custom_tool_call":  # its free-text input, as the function's one field
                raw = item.get("input")
                if not isinstance(raw, str):
                    raise bad_request(
                        f"Invalid value for '{where}.input': a string is required.",
                        param=f"{where}.input",
                        code="invalid_value",
                    )
                arguments: Any = json.dumps({CUSTOM_INPUT: raw})
            else:
                arguments = item.get("arguments") or ""
            call = {
                "id": _string(item, "call_id", where),
                "type": "function",
                "function": {"name": _string(item, "name", where), "arguments": arguments},
            }
            if not isinstance(call["function"]["arguments"], str):  # type: ignore[index]
                raise bad_request(
                    f"Invalid value for '{where}.arguments': a JSON string is required.",
                    param=f"{where}.arguments",
                    code="invalid_value",
                )
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant" and last.get("content"):
                last["tool_calls"] = [call]
            else:
                messages.append(
                    {"role": "assistant", "content": None, "tool_calls": [call], ORIGIN: where}
                )
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            text = _texts(output, f"{where}.output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": _string(item, "call_id", where),
                    "content": text,
                    ORIGIN: where,
                }
            )
        elif kind == "reasoning":
            continue
        else:
            raise bad_request(
                f"Input items of type {kind!r} are not supported by this server; send "
                "'message', 'function_call', 'function_call_output', 'custom_tool_call' and "
                "'custom_tool_call_output' items.",
                param=f"{where}.type",
                code="unsupported_parameter" if isinstance(kind, str) else "invalid_value",
            )
    return messages


# A freeform `custom` tool (Codex's apply_patch) is offered to the model as a function
# taking its free text in one string field; the call is answered as a custom_tool_call
# whose `input` is that text, and a custom_tool_call in the history goes back the same way.
# The tool's grammar is shown to the model in the description, not enforced.
CUSTOM_INPUT = "input"
CUSTOM_FORMATS = ("text", "grammar")


def _custom_function(tool: dict[str, Any], where: str) -> dict[str, Any]:
    fmt = tool.get("format") or {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in CUSTOM_FORMATS:
        raise bad_request(
            f"Invalid value for '{where}.format': a format of type 'text' or 'grammar' is "
            "required.",
            param=f"{where}.format",
            code="invalid_value",
        )
    about = str(tool.get("description") or "")
    if fmt["type"] == "grammar" and isinstance(fmt.get("definition"), str):
        about += (
            f"\n\nThe '{CUSTOM_INPUT}' text follows this {fmt.get('syntax', '')} grammar:\n"
            + fmt["definition"]
        )
    parameters = {
        "type": "object",
        "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's input."}},
        "required": [CUSTOM_INPUT],
        "additionalProperties": False,
    }
    fn: dict[str, Any] = {"name": _string(tool, "name", where), "parameters": parameters}
    if about.strip():
        fn["description"] = about.strip()
    return fn


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Responses function tools and freeform `custom` tools as chat tools; every other
    type (hosted tools such as web_search or file_search, Codex's local_shell) is
    refused: these models can only call tools that the client runs."""
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        ttype = tool.get("type")
        if ttype == "custom":
            out.append({"type": "function", "function": _custom_function(tool, f"tools[{i}]")})
            continue
        if ttype != "function":
            raise bad_request(
                f"Tools of type {ttype!r} are not supported by this server: only 'function' "
                "and 'custom' tools are (the model asks, your code runs them).",
                param=f"tools[{i}].type",
                code="unsupported_tool_type",
            )
        fn: dict[str, Any] = {"name": _string(tool, "name", f"tools[{i}]")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                fn[key] = tool[key]
        out.append({"type": "function", "function": fn})
    return out


def _custom_names(tools: list[dict[str, Any]] | None) -> set[str]:
    return {str(t.get("name")) for t in tools or () if t.get("type") == "custom"}


def _custom_input(arguments: str) -> str:
    """A custom tool's free text from the function call's arguments (the model's raw
    arguments where they are not the one-field object asked for)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        return str(value[CUSTOM_INPUT])
    return arguments


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        if choice not in (None, "none", "auto", "required"):
            raise bad_request(
                f"Invalid value for 'tool_choice': {choice!r} is not one of 'none', 'auto', "
                "'required' or a function.",
                param="tool_choice",
                code="invalid_value",
            )
        return choice
    if choice.get("type") not in ("function", "custom"):
        raise bad_request(
            f"Invalid value for 'tool_choice.type': {choice.get('type')!r}; only function "
            "and custom tools are supported by this server.",
            param="tool_choice.type",
            code="unsupported_tool_type",
        )
    name = choice.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(
            "Invalid value for 'tool_choice.name': the function's name is required.",
            param="tool_choice.name",
            code="missing_required_parameter",
        )
    return {"type": "function", "function": {"name": name}}


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """text.format as chat's response_format (json_schema's name/schema/strict nested)."""
    fmt = (text or {}).get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise bad_request(
            "Invalid value for 'text.format': an object is required.",
            param="text.format",
            code="invalid_value",
        )
    ftype = fmt.get("type")
    if ftype == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise bad_request(
                "Invalid value for 'text.format.schema': a JSON schema object is required.",
                param="text.format.schema",
                code="invalid_value",
            )
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    if ftype in ("text", "json_object"):
        return {"type": ftype}
    raise bad_request(
        f"Invalid value for 'text.format.type': {ftype!r} is not one of 'text', "
        "'json_object', 'json_schema'.",
        param="text.format.type",
        code="invalid_value",
    )


# Chat parameters as the Responses API names them, for errors raised by chat's checks.
_PARAMS = {
    "response_format": "text.format",
    "max_completion_tokens": "max_output_tokens",
    "messages": "input",
}


def _renamed(exc: APIError, origins: list[str] | None = None) -> APIError:
    """A chat check's error with the Responses API's parameter names: a message's
    `messages[k]` as the input item it came from (`origins[k]`), when known."""
    param = exc.param or ""
    message = exc.message
    found = re.match(r"messages\[(\d+)\]", param)
    if found is not None:
        k = int(found.group(1))
        where = origins[k] if origins is not None and k < len(origins) else "input"
        rest = param[found.end() :].replace(".tool_call_id", ".call_id")
        param = where + rest if where.startswith("input[") and rest == ".call_id" else where
        message = re.sub(
            r"messages\[(\d+)\]",
            lambda m: (
                origins[int(m.group(1))]
                if origins is not None and int(m.group(1)) < len(origins)
                else "input"
            ),
            message,
        )
        return APIError(exc.status, message, param=param, code=exc.code, headers=exc.headers)
    for chat_name, ours in _PARAMS.items():
        if param == chat_name or param.startswith((chat_name + "[", chat_name + ".")):
            message = message.replace(f"'{chat_name}'", f"'{ours}'")
            new = ours + param[len(chat_name) :]
            return APIError(exc.status, message, param=new, code=exc.code, headers=exc.headers)
    if param.startswith(("tools[", "tool_choice")):  # a Responses tool has no `function`
        new = param.replace(".function.", ".").replace(".function", "")
        message = message.replace(param, new)
        return APIError(exc.status, message, param=new, code=exc.code, headers=exc.headers)
    return exc


def chat_request(req: ResponsesRequest) -> schemas.ChatCompletionRequest:
    """The chat completion request this Responses request is, validated by chat's own
    rules (so what chat refuses, this refuses too, with our parameter names)."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions, ORIGIN: "instructions"})
    messages += items_to_messages(req._history, param="previous_response_id")
    if isinstance(req.input, str):
        messages.append({"role": "user", "content": req.input, ORIGIN: "input"})
    else:
        messages += items_to_messages(req.input, param="input")
    origins = [str(m.pop(ORIGIN)) for m in messages]
    if req._history:  # the stored conversation's items are not this request's
        origins = [o if not o.startswith("previous") else "previous_response_id" for o in origins]
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    optional = {
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "tools": _tools(req.tools),
        "tool_choice": _tool_choice(req.tool_choice),
        "parallel_tool_calls": req.parallel_tool_calls if req.tools else None,
        "response_format": _response_format(req.text),
        "user": req.user,
        "priority": (req.model_extra or {}).get("priority"),
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if not messages:
        raise bad_request(
            "Invalid value for 'input': there is no message to answer.",
            param="input",
            code="invalid_value",
        )
    try:
        return schemas.validate_chat(body)
    except APIError as exc:
        raise _renamed(exc, origins) from exc


def work(req: ResponsesRequest, model: CatalogModel) -> Work:
    return chat.work(chat_request(req), model)


# --- the answer: output items and stream events ------------------------------------------


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class _Item:
    """One output item as it is built: a message's text, or a function call."""

    body: dict[str, Any]
    text: list[str] = field(default_factory=list)
    open: bool = True


class Output:
    """The worker's chat events as Responses output items, and (for a stream) the
    semantic events in OpenAI's order, numbered. One builder for both answers, so the
    streamed items and the JSON body's are the same."""

    def __init__(self, req: ResponsesRequest, store: bool, calls: ToolCalls | None = None) -> None:
        self.req = req
        self.id = _id("resp")
        self.created = int(time.time())
        self.store = store
        self.items: list[_Item] = []
        self.message: _Item | None = None  # the message item being written
        self.calls: dict[int, _Item] = {}  # function calls by their chat index
        self.custom = _custom_names(req.tools)  # answered as custom_tool_call items
        # Checks the pieces against what the request allowed (the chat request's tools
        # and tool_choice: the job's, or translated here).
        self.pieces = calls or ToolCalls.for_request(
            chat_request(req).model_dump(mode="json", exclude_none=True)
        )
        self.seq = 0
        self.status = "in_progress"
        self.incomplete: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, etype: str, **fields: Any) -> dict[str, Any]:
        body = {"type": etype, "sequence_number": self.seq, **fields}
        self.seq += 1
        return body

    def response(self) -> dict[str, Any]:
        req = self.req
        reasoning = req.reasoning or {}
        text = dict(req.text or {})
        text.setdefault("format", {"type": "text"})
        body = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": self.status,
            "background": False,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": None,
            "model": req.model,
            "output": [item.body for item in self.items if not item.open]
            if self.status == "in_progress"
            else [item.body for item in self.items],
            "parallel_tool_calls": True
            if req.parallel_tool_calls is None
            else req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "prompt_cache_key": req.prompt_cache_key,
            "reasoning": {
                "effort": reasoning.get("effort"),
                "summary": reasoning.get("summary", reasoning.get("generate_summary")),
            },
            "safety_identifier": None,
            "service_tier": "default",
            "store": self.store,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "text": text,
            "tool_choice": "auto" if req.tool_choice is None else req.tool_choice,
            "tools": [
                {
                    "type": "custom",
                    "name": t.get("name"),
                    "description": t.get("description"),
                    "format": t.get("format") or {"type": "text"},
                }
                if t.get("type") == "custom"
                else {
                    "type": "function",
                    "name": t.get("name"),
                    "description": t.get("description"),
                    "parameters": t.get("parameters"),
                    "strict": t.get("strict", True),
                }
                for t in req.tools or []
            ],
            "top_logprobs": 0,
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "truncation": req.truncation or "disabled",
            "metadata": req.metadata or {},
        }
        # Absent rather than null, as OpenAI's schema has them: usage until it is known,
        # and the deprecated `user` when none was sent.
        if self.usage is not None:
            body["usage"] = self.usage
        if req.user is not None:
            body["user"] = req.user
        return body

    # Each step returns the stream events it makes (a JSON answer drops them).

    def opening(self) -> list[dict[str, Any]]:
        return [
            self.event("response.created", response=self.response()),
            self.event("response.in_progress", response=self.response()),
        ]

    def _add(self, body: dict[str, Any]) -> tuple[_Item, list[dict[str, Any]]]:
        item = _Item(body)
        self.items.append(item)
        added = self.event(
            "response.output_item.added", output_index=len(self.items) - 1, item=dict(body)
        )
        return item, [added]

    def _index(self, item: _Item) -> int:
        return self.items.index(item)

    def text(self, delta: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.message is None:
            body = {
                "id": _id("msg"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self.message, out = self._add(body)
            out.append(
                self.event(
                    "response.content_part.added",
                    item_id=body["id"],
                    output_index=self._index(self.message),
                    content_index=0,
                    part=self._part(""),
                )
            )
        self.message.text.append(delta)
        out.append(
            self.event(
                "response.output_text.delta",
                item_id=self.message.body["id"],
                output_index=self._index(self.message),
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return out

    @staticmethod
    def _part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def _close_message(self, status: str) -> list[dict[str, Any]]:
        item, self.message = self.message, None
        if item is None:
            return []
        text = "".join(item.text)
        part = self._part(text)
        item.body.update(status=status, content=[part])
        item.open = False
        at = {"item_id": item.body["id"], "output_index": self._index(item), "content_index": 0}
        return [
            self.event("response.output_text.done", **at, text=text, logprobs=[]),
            self.event("response.content_part.done", **at, part=part),
            self.event("response.output_item.done", output_index=self._index(item), item=item.body),
        ]

    def tool_call(self, piece: dict[str, Any]) -> list[dict[str, Any]]:
        """One checked chat tool-call piece (inference/textparts.py: the first of a call
        has its index, id and function.name; later ones its index and arguments)."""
        index = piece["index"]
        fn: dict[str, Any] = piece["function"]
        out: list[dict[str, Any]] = []
        item = self.calls.get(index)
        if item is None:
            out += self._close_message("completed")
            if fn["name"] in self.custom:
                body = {
                    "id": _id("ctc"),
                    "type": "custom_tool_call",
                    "call_id": piece["id"],
                    "name": fn["name"],
                    "input": "",
                }
            else:
                body = {
                    "id": _id("fc"),
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": piece["id"],
                    "name": fn["name"],
                }
            item, added = self._add(body)
            self.calls[index] = item
            out += added
        pieces = fn.get("arguments")
        if isinstance(pieces, str) and pieces:
            item.text.append(pieces)
            if item.body["type"] == "custom_tool_call":
                return out  # its input is known once the arguments are whole
            out.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=item.body["id"],
                    output_index=self._index(item),
                    delta=pieces,
                )
            )
        return out

    def _close_calls(self) -> list[dict[str, Any]]:
        out = []
        for item in self.calls.values():
            if not item.open:
                continue
            arguments = "".join(item.text)
            item.open = False
            at = {"item_id": item.body["id"], "output_index": self._index(item)}
            if item.body["type"] == "custom_tool_call":
                text = _custom_input(arguments)
                item.body.update(input=text)
                out += [
                    self.event("response.custom_tool_call_input.delta", **at, delta=text),
                    self.event("response.custom_tool_call_input.done", **at, input=text),
                    self.event(
                        "response.output_item.done", output_index=self._index(item), item=item.body
                    ),
                ]
                continue
            item.body.update(status="completed", arguments=arguments)
            out += [
                self.event(
                    "response.function_call_arguments.done",
                    **at,
                    name=item.body["name"],
                    arguments=arguments,
                ),
                self.event(
                    "response.output_item.done", output_index=self._index(item), item=item.body
                ),
            ]
        return out

    def done(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The worker's `done`: every open item closed, the status and usage set."""
        reason = str(event.get("finish_reason") or "stop")
        complete = reason in ("stop", "tool_calls", "function_call")
        out = self._close_message("completed" if complete else "incomplete")
        out += self._close_calls()
        usage = token_usage(event)
        self.usage = {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        }
        if complete:
            self.status = "completed"
        else:
            self.status = "incomplete"
            why = "max_output_tokens" if reason == "length" else reason
            self.incomplete = {"reason": why}
        return out

    def closing(self) -> dict[str, Any]:
        etype = "response.completed" if self.status == "completed" else "response.incomplete"
        return self.event(etype, response=self.response())

    def failed(self, err: APIError) -> list[dict[str, Any]]:
        self.status = "failed"
        self.error = {"code": str(err.code or "server_error"), "message": err.message}
        for item in self.items:
            item.open = False
        return [self.event("response.failed", response=self.response())]

    def step(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """One worker event (DELTA or DONE; an ERROR is raised) as stream events."""
        kind = event.get("kind")
        if kind == EventKind.ERROR:
            raise _renamed(from_event(event))
        if kind == EventKind.DONE:
            return self.done(event)
        if kind != EventKind.DELTA:
            return []
        out: list[dict[str, Any]] = []
        if event.get("text"):
            out += self.text(str(event["text"]))
        for piece in self.pieces.feed(event.get("tool_calls")):  # checked (a hive's input)
            out += self.tool_call(piece)
        return out


# --- storing -----------------------------------------------------------------------------


def _input_items(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as Responses items with ids (what input_items lists)."""
    if isinstance(req.input, str):
        raw: list[dict[str, Any]] = [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": req.input}],
            }
        ]
    else:
        raw = [dict(item) for item in req.input]
    items = []
    for item in raw:
        kind = item.setdefault("type", "message")
        if isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        prefix = {
            "message": "msg",
            "function_call": "fc",
            "function_call_output": "fco",
            "custom_tool_call": "ctc",
            "custom_tool_call_output": "ctco",
        }
        item.setdefault("id", _id(prefix.get(str(kind), "item")))
        items.append(item)
    return items


async def _store(call: Call[ResponsesRequest], out: Output) -> None:
    """Keep the answered response for the tenant, where `store` and retention allow."""
    caller = call.caller
    if not out.store or caller is None:
        return
    req = call.body
    await db(
        inference_services.stored_response_create,
        tenant_id=caller.tenant_id,
        tenant=caller.tenant_name,
        response_id=out.id,
        end_user=call.work.end_user,
        basis=call.keep,
        model=req.model,
        history=req._history,
        input_items=_input_items(req),
        body=out.response(),
        days=caller.prompt_retention_days,
    )


# --- respond -----------------------------------------------------------------------------


def _sse(body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":"))
    return f"event: {body['type']}\ndata: {data}\n\n".encode()


async def _relay(
    call: Call[ResponsesRequest], out: Output, events: AsyncGenerator[dict[str, Any], None]
) -> AsyncIterator[bytes]:
    """The semantic events as SSE, as the worker's events arrive. A failure after the
    headers went out is a response.failed event (the stream has no status to change)."""
    try:
        for body in out.opening():
            yield _sse(body)
        async for event in events:
            try:
                steps = out.step(event)
            except APIError as err:
                for body in out.failed(err):
                    yield _sse(body)
                return
            for body in steps:
                yield _sse(body)
            if event.get("kind") == EventKind.DONE:
                break
        if out.status == "in_progress":  # the job ended without its `done`
            for body in out.failed(
                APIError(502, "The worker ended the job without a result.", code="worker_error")
            ):
                yield _sse(body)
            return
        await _store(call, out)
        yield _sse(out.closing())
    except Exception:
        logger.exception("responses stream %s failed", out.id)
        crash = APIError(500, "The server had an error while streaming the response.")
        for body in out.failed(crash):
            yield _sse(body)
    finally:
        await events.aclose()


async def respond(call: Call[ResponsesRequest]) -> HttpResponseBase:
    req = call.body
    store = req.store is not False and bool(call.keep)
    out = Output(req, store, ToolCalls.for_request(call.job.request))
    if store:
        # The stored response is this request's kept exchange (the same basis, retention,
        # export and erasure, and more of it): not kept a second time by the pipeline
        # (gdpr/exchanges.py). Without `store`, the exchange is kept as chat's is.
        call.job.after = None
        call.job.transcript = None
    if req.stream:
        try:
            events = await opened(call.job)
        except APIError as exc:
            raise _renamed(exc) from exc
        return streaming(_relay(call, out, events), "text/event-stream")
    async for event in call.job.events():
        out.step(event)
    if out.status == "in_progress":
        raise APIError(502, "The worker ended the job without a result.", code="worker_error")
    await _store(call, out)
    return JsonResponse(out.response())


RESPONSES = Resource(
    task=Task.CHAT,  # the worker runs a chat; metered, limited and routed as chat
    capability=CatalogModel.Capability.TEXT_GEN,
    parse=parse,
    model=lambda req: req.model,
    work=work,
    respond=respond,
    bind=bind,
)


# --- GET / DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items ------------------


def _caller(request: HttpRequest) -> Caller:
    """The caller of a stored-response request: its key, which must be allowed the chat
    endpoints (what created the response)."""
    caller = authenticate(bearer(request), request.META.get("HTTP_HOST", ""))
    if caller.scope_endpoints and "chat" not in caller.scope_endpoints:
        raise APIError(
            403,
            "This API key is not allowed to use the Responses API (it needs the 'chat' scope).",
            code="scope_not_allowed",
        )
    return caller


def _not_found(response_id: str) -> APIError:
    return APIError(
        404,
        f"Response with id '{response_id}' not found.",
        param="response_id",
        code="response_not_found",
    )


def _get(request: HttpRequest, response_id: str) -> dict[str, Any]:
    caller = _caller(request)
    row = inference_selectors.stored_response_get(
        tenant_id=caller.tenant_id, response_id=response_id
    )
    if row is None:
        raise _not_found(response_id)
    return {"body": row.body, "input_items": row.input_items}


def _delete(request: HttpRequest, response_id: str) -> bool:
    caller = _caller(request)
    return inference_services.stored_response_delete(
        tenant_id=caller.tenant_id, response_id=response_id
    )


@endpoint("GET", "DELETE")
async def detail(request: HttpRequest, response_id: str) -> HttpResponse:
    if request.method == "DELETE":
        if not await db(_delete, request, response_id):
            raise _not_found(response_id)
        return JsonResponse({"id": response_id, "object": "response.deleted", "deleted": True})
    if request.GET.get("stream") in ("true", "1"):
        raise _refuse("stream", "a stored response is read back whole")
    stored = await db(_get, request, response_id)
    return JsonResponse(stored["body"])


MAX_LIST_LIMIT = 100


def _list_params(request: HttpRequest) -> tuple[int, str, str]:
    raw = request.GET.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise bad_request(
            f"Invalid value for 'limit': {raw!r} is not an integer from 1 to {MAX_LIST_LIMIT}.",
            param="limit",
            code="invalid_value",
        )
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request(
            f"Invalid value for 'order': {order!r} is not one of 'asc', 'desc'.",
            param="order",
            code="invalid_value",
        )
    return limit, order, request.GET.get("after", "")


@endpoint("GET")
async def input_items(request: HttpRequest, response_id: str) -> HttpResponse:
    limit, order, after = _list_params(request)
    if request.GET.get("include"):
        raise _refuse("include", "input items are listed as they were sent")
    stored = await db(_get, request, response_id)
    items = list(stored["input_items"])
    if order == "desc":
        items.reverse()
    if after:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise bad_request(
                f"Invalid value for 'after': no input item '{after}' in this response.",
                param="after",
                code="invalid_value",
            )
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return JsonResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
    )
