"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API (Claude Code
speaks it), on the same pipeline as chat.

Nothing here runs a request: an Anthropic body is translated into the internal chat
request (OpenAI's wire format, validated by inference/schemas.py exactly as a chat body
is) and served by `pipeline.serve` as a chat task (same key scopes, limits, scheduler
script, routing, metering and audit). What differs is only the framing on both sides:

* in: `x-api-key` (or a bearer key), `anthropic-version`, `system`, content blocks
  (text, tool_use, tool_result), `tools`/`tool_choice` in Anthropic's shapes,
  `stop_sequences` and `top_k` (given to the engine), `metadata.user_id` (the end user);
* out: a `message` object with text and tool_use blocks, Anthropic's stop reasons and
  usage fields, its SSE event sequence (message_start, content_block_start, ping,
  content_block_delta, content_block_stop, message_delta, message_stop; `event: error`
  after the headers), and its error body with its statuses (529 for "overloaded").
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from pydantic import Field, StrictBool, StrictInt, StrictStr

from hives.models import CatalogModel
from hives.protocol import EventKind, Task
from inference import chat, schemas
from inference.errors import APIError, bad_request, from_event
from inference.pipeline import (
    Call,
    Resource,
    Work,
    count,
    opened,
    read_json,
    result,
    serve,
    streaming,
    usage_of,
)
from inference.schemas import ChatCompletionRequest, ModelName, TokenLimit, _Strict, _validate
from inference.textparts import ToolCalls

FIRST_VERSION = "2023-01-01"
_VERSION = re.compile(r"20[0-9]{2}-[01][0-9]-[0-3][0-9]")
# Extended thinking: accepted, and the answer has no thinking blocks (the models served
# here do not reason apart from their answer; Anthropic's budget is a ceiling, not a quota).
THINKING = ("enabled", "disabled", "adaptive", "between_tools")

# --- the body ----------------------------------------------------------------------------


class MessageParam(_Strict):
    role: Literal["user", "assistant"]
    content: StrictStr | list[dict[str, Any]]


class _Body(_Strict):
    model: ModelName
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: StrictStr | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    mcp_servers: list[Any] | None = None
    output_config: dict[str, Any] | None = None


class MessagesRequest(_Body):
    max_tokens: TokenLimit
    stop_sequences: (
        Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(max_length=32)] | None
    ) = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    stream: StrictBool | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(_Body):
    pass


@dataclass(frozen=True)
class Messages:
    """A parsed /v1/messages body: Anthropic's, and the chat request it became."""

    body: _Body
    chat: ChatCompletionRequest
    count_only: bool = False

    @property
    def user(self) -> str | None:  # read by the pipeline as the end user (GDPR subject)
        return self.chat.user


def _invalid(param: str, what: str) -> APIError:
    return bad_request(f"Invalid value for '{param}': {what}.", param=param, code="invalid_value")


def _text_of(blocks: Any, param: str, model: str) -> str:
    """The text of a string or of a list of text blocks (system, tool_result content)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _invalid(param, "expected a string or a list of text blocks")
    out: list[str] = []
    for j, block in enumerate(blocks):
        where = f"{param}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in ("image", "document"):
            raise _unsupported_media(where, kind, model)
        if kind != "text" or not isinstance(block.get("text"), str):
            raise _invalid(where, "expected a text block ({'type': 'text', 'text': ...})")
        out.append(block["text"])
    return "\n".join(out) if param == "system" else "".join(out)


def _unsupported_media(param: str, kind: str, model: str) -> APIError:
    return bad_request(
        f"'{param}' is a{'n' if kind == 'image' else ''} {kind} block, and the model "
        f"'{model}' takes text only.",
        param=param,
        code="unsupported_content",
    )


def _message(i: int, msg: MessageParam, model: str) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages: a user turn's tool results become `tool`
    messages (first, as they answer the previous turn), its text a user message; an
    assistant turn's tool_use blocks become its `tool_calls`."""
    if isinstance(msg.content, str):
        return [{"role": msg.role, "content": msg.content}]
    if not msg.content:
        raise _invalid(f"messages[{i}].content", "the list of blocks is empty")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(msg.content):
        where = f"messages[{i}].content[{j}]"
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _invalid(f"{where}.text", "expected a string")
            texts.append(block["text"])
        elif kind in ("image", "document"):
            raise _unsupported_media(where, str(kind), model)
        elif kind == "tool_use" and msg.role == "assistant":
            name, call_id, args = block.get("name"), block.get("id"), block.get("input", {})
            if not isinstance(name, str) or not name:
                raise _invalid(f"{where}.name", "expected the tool's name")
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"{where}.id", "expected the tool_use block's id")
            if not isinstance(args, dict):
                raise _invalid(f"{where}.input", "expected an object")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
            )
        elif kind == "tool_result" and msg.role == "user":
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"{where}.tool_use_id", "expected the id of a tool_use block")
            content = block.get("content", "")
            text = _text_of(content, f"{where}.content", model)
            if block.get("is_error") is True:
                text = f"Error: {text}"
            results.append({"role": "tool", "tool_call_id": call_id, "content": text})
        elif kind in ("thinking", "redacted_thinking") and msg.role == "assistant":
            continue  # earlier turns' reasoning: not part of the prompt (as with Claude)
        else:
            raise _invalid(
                f"{where}.type",
                f"{kind!r} is not a content block a{'n' if msg.role == 'assistant' else ''} "
                f"{msg.role} message can carry here",
            )
    out: list[dict[str, Any]] = list(results)
    if msg.role == "assistant":
        turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if calls:
            turn["tool_calls"] = calls
        out.append(turn)
    elif texts or not results:
        out.append({"role": "user", "content": "".join(texts)})
    return out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise bad_request(
                f"'tools[{i}]' is a server tool of type {kind!r}, which this server does not "
                "run; declare client tools (name, description, input_schema) instead.",
                param=f"tools[{i}].type",
                code="unsupported_parameter",
            )
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise _invalid(f"tools[{i}].name", "expected a name of 1-64 letters, digits, _ or -")
        if not isinstance(schema, dict):
            raise _invalid(f"tools[{i}].input_schema", "expected a JSON schema object")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any], names: set[str]) -> tuple[Any, bool | None]:
    """Anthropic's tool_choice as chat's, and parallel_tool_calls (None: the default)."""
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in names:
            raise _invalid("tool_choice.name", f"{name!r} is not one of the tools declared")
        return {"type": "function", "function": {"name": name}}, parallel
    raise _invalid("tool_choice.type", f"{kind!r} is not one of 'auto', 'any', 'tool', 'none'")


def to_chat(body: _Body) -> dict[str, Any]:
    """The chat body (OpenAI's wire format) an Anthropic body asks for."""
    messages: list[dict[str, Any]] = []
    if body.system is not None:
        system = _text_of(body.system, "system", body.model)
        if system:
            messages.append({"role": "system", "content": system})
    for i, msg in enumerate(body.messages):
        messages.extend(_message(i, msg, body.model))
    out: dict[str, Any] = {"model": body.model, "messages": messages}
    if body.tools:
        out["tools"] = _tools(body.tools)
    if body.tool_choice is not None:
        if not body.tools:
            raise _invalid("tool_choice", "there are no tools to choose from")
        names = {t["function"]["name"] for t in out["tools"]}
        out["tool_choice"], parallel = _tool_choice(body.tool_choice, names)
        if out["tool_choice"] == "none":
            del out["tools"], out["tool_choice"]  # nothing may be called: no tools at all
        elif parallel is not None:
            out["parallel_tool_calls"] = parallel
    form = (body.output_config or {}).get("format")
    if form is not None:  # structured output: chat's response_format, as the engines honour it
        if not isinstance(form, dict) or form.get("type") != "json_schema":
            raise _invalid("output_config.format.type", "expected 'json_schema'")
        if not isinstance(form.get("schema"), dict):
            raise _invalid("output_config.format.schema", "expected a JSON schema object")
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": form["schema"]},
        }
    if isinstance(body, MessagesRequest):
        out["max_tokens"] = body.max_tokens
        for name in ("temperature", "top_p", "stream"):
            if getattr(body, name) is not None:
                out[name] = getattr(body, name)
        user = (body.metadata or {}).get("user_id")
        if user is not None:
            if not isinstance(user, str) or len(user) > 256:
                raise _invalid("metadata.user_id", "expected a string of at most 256 characters")
            if user:
                out["user"] = user
    return out


def check_version(request: HttpRequest) -> None:
    """The anthropic-version header, when sent, is a date (YYYY-MM-DD) from the first
    version on: every client sends one and the shapes served here are those of all of
    them; curl users may leave it out. A malformed one is refused (400)."""
    version = request.headers.get("anthropic-version")
    if version is None:
        return
    version = version.strip()
    if not _VERSION.fullmatch(version) or version < FIRST_VERSION:
        raise bad_request(
            f"anthropic-version: {version[:40]!r} is not a version of the API (a date such "
            f"as {FIRST_VERSION}).",
            param="anthropic-version",
            code="invalid_version",
        )


def _parse(request: HttpRequest, *, count_only: bool) -> Messages:
    check_version(request)
    data = read_json(request)
    body: _Body = _validate(CountTokensRequest if count_only else MessagesRequest, data)
    if body.mcp_servers:
        raise bad_request(
            "'mcp_servers' is not supported: this server does not connect to MCP servers; run "
            "them in the client.",
            param="mcp_servers",
            code="unsupported_parameter",
        )
    if body.thinking is not None and body.thinking.get("type") not in THINKING:
        raise _invalid("thinking.type", f"expected one of {', '.join(THINKING)}")
    chat_body = to_chat(body)
    if count_only:
        chat_body["max_tokens"] = 1
    return Messages(body=body, chat=schemas.validate_chat(chat_body), count_only=count_only)


def parse(request: HttpRequest) -> Messages:
    return _parse(request, count_only=False)


def parse_count(request: HttpRequest) -> Messages:
    return _parse(request, count_only=True)


def work(msgs: Messages, model: CatalogModel) -> Work:
    """Chat's work, with what only Anthropic's body says: its stop sequences (more than
    chat's four) and top_k, both honoured by the engines."""
    base = chat.work(msgs.chat, model)
    request = dict(base.request)
    if isinstance(msgs.body, MessagesRequest):
        request["stop"] = list(msgs.body.stop_sequences or [])
        if msgs.body.top_k is not None:
            request["top_k"] = msgs.body.top_k
    return dataclasses.replace(base, request=request)


# --- the answer --------------------------------------------------------------------------

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def stop_reason(done: dict[str, Any], stops: list[str]) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence of a job's final event."""
    matched = done.get("stop_sequence")
    if isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(str(done.get("finish_reason") or "stop"), "end_turn"), None


def usage(event: dict[str, Any]) -> dict[str, int]:
    u = usage_of(event)
    return {
        "input_tokens": count(u.get("prompt_tokens", event.get("prompt_tokens"))),
        "output_tokens": count(u.get("completion_tokens", event.get("completion_tokens"))),
    }


@dataclass
class _Block:
    kind: str  # "text" or "tool_use"
    text: str = ""
    id: str = ""
    name: str = ""


class Blocks:
    """Folds a text job's events into Anthropic's content blocks: text, and tool calls
    (chat's `tool_calls` deltas: index, id, function name, arguments in pieces). Each
    step says what changed, so the stream and the whole body share one reading."""

    def __init__(self, calls: ToolCalls) -> None:
        self.blocks: list[_Block] = []
        self._calls = calls  # checks the pieces against what the request allowed
        self._tools: dict[int, int] = {}  # the call's index -> its block's

    def text(self, piece: str) -> list[tuple[str, int, Any]]:
        out: list[tuple[str, int, Any]] = []
        if not self.blocks or self.blocks[-1].kind != "text":
            self.blocks.append(_Block("text"))
            out.append(("start", len(self.blocks) - 1, {"type": "text", "text": ""}))
        self.blocks[-1].text += piece
        out.append(("delta", len(self.blocks) - 1, {"type": "text_delta", "text": piece}))
        return out

    def tool_calls(self, raw: Any) -> list[tuple[str, int, Any]]:
        """A delta's tool-call pieces, checked as the chat endpoint checks them
        (inference/textparts.py): a call's first piece opens a tool_use block, its
        arguments' pieces are input_json_delta."""
        out: list[tuple[str, int, Any]] = []
        for piece in self._calls.feed(raw):
            index, args = piece["index"], piece["function"].get("arguments") or ""
            if "id" in piece:
                block = _Block("tool_use", id=piece["id"], name=piece["function"]["name"])
                self.blocks.append(block)
                self._tools[index] = len(self.blocks) - 1
                start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
                out.append(("start", len(self.blocks) - 1, start))
            at = self._tools[index]
            if args:
                self.blocks[at].text += args
                out.append(("delta", at, {"type": "input_json_delta", "partial_json": args}))
        return out

    def event(self, event: dict[str, Any]) -> list[tuple[str, int, Any]]:
        out: list[tuple[str, int, Any]] = []
        if event.get("text"):
            out += self.text(str(event["text"]))
        if event.get("tool_calls") is not None:
            out += self.tool_calls(event["tool_calls"])
        return out

    def content(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for b in self.blocks:
            if b.kind == "text":
                out.append({"type": "text", "text": b.text})
            else:
                out.append({"type": "tool_use", "id": b.id, "name": b.name, "input": _input(b)})
        return out


def _input(block: _Block) -> dict[str, Any]:
    try:
        value = json.loads(block.text or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise APIError(
            502,
            f"The model's call of '{block.name}' has arguments that are not a JSON object.",
            code="worker_error",
        )
    return value


def message(msg_id: str, model: str) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    body = json.dumps({"type": kind, **data}, separators=(",", ":"))
    return f"event: {kind}\ndata: {body}\n\n".encode()


def error_body(err: APIError) -> tuple[int, dict[str, Any]]:
    """Anthropic's status and error body of an error raised on the path."""
    status, kind = ERROR_TYPES.get(err.status, (err.status, None))
    if kind is None:
        kind = "api_error" if err.status >= 500 else "invalid_request_error"
    return status, {"type": "error", "error": {"type": kind, "message": err.message}}


# Our status -> Anthropic's (status, error type). A 503 (no worker ready, the queue full,
# the database down) is Anthropic's 529 overloaded_error, which its clients retry.
ERROR_TYPES: dict[int, tuple[int, str | None]] = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    402: (402, "billing_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    413: (413, "request_too_large"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    502: (500, "api_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
}


async def _stream(
    events: AsyncGenerator[dict[str, Any], None],
    msg_id: str,
    model: str,
    stops: list[str],
    calls: ToolCalls,
) -> AsyncIterator[bytes]:
    """Anthropic's event sequence, as the job's events arrive."""
    blocks = Blocks(calls)
    open_block: int | None = None
    try:
        first = await events.__anext__()
        start = message(msg_id, model)
        start["usage"] = {**usage(first), "output_tokens": 0}
        yield _sse("message_start", {"message": start})
        yield _sse("ping", {})
        pending: dict[str, Any] | None = first
        while True:
            event = pending if pending is not None else await events.__anext__()
            pending = None
            kind = event.get("kind")
            if kind == EventKind.DELTA:
                for step, index, data in blocks.event(event):
                    if step == "start":
                        if open_block is not None:
                            yield _sse("content_block_stop", {"index": open_block})
                        open_block = index
                        yield _sse("content_block_start", {"index": index, "content_block": data})
                    else:
                        yield _sse("content_block_delta", {"index": index, "delta": data})
            elif kind == EventKind.DONE:
                if open_block is not None:
                    yield _sse("content_block_stop", {"index": open_block})
                reason, sequence = stop_reason(event, stops)
                yield _sse(
                    "message_delta",
                    {
                        "delta": {"stop_reason": reason, "stop_sequence": sequence},
                        "usage": usage(event),
                    },
                )
                yield _sse("message_stop", {})
                break
            elif kind == EventKind.ERROR:
                yield _sse("error", error_body(from_event(event))[1])
                break
    except StopAsyncIteration:
        yield _sse("error", error_body(APIError(502, "The worker ended the job early."))[1])
    except Exception:
        yield _sse(
            "error",
            error_body(APIError(500, "The server had an error while streaming the response."))[1],
        )
    finally:
        await events.aclose()


async def _whole(call: Call[Messages], msg_id: str) -> dict[str, Any]:
    blocks = Blocks(ToolCalls.for_request(call.job.request))
    async for event in call.job.events():
        kind = event.get("kind")
        if kind == EventKind.DELTA:
            blocks.event(event)
        elif kind == EventKind.DONE:
            out = message(msg_id, call.work.model)
            out["content"] = blocks.content()
            stops = list(call.work.request.get("stop") or [])
            out["stop_reason"], out["stop_sequence"] = stop_reason(event, stops)
            out["usage"] = usage(event)
            return out
        elif kind == EventKind.ERROR:
            raise from_event(event)
    raise APIError(502, "The worker ended the job without a result.", code="worker_error")


async def respond(call: Call[Messages]) -> HttpResponseBase:
    msg_id = f"msg_{uuid.uuid4().hex[:24]}"
    if call.body.count_only:  # the prompt's count: the one token made is nobody's answer
        return JsonResponse({"input_tokens": usage(await result(call.job))["input_tokens"]})
    body = call.body.body
    stops = list(call.work.request.get("stop") or [])
    if isinstance(body, MessagesRequest) and body.stream:
        events = await opened(call.job)
        calls = ToolCalls.for_request(call.job.request)
        stream = _stream(events, msg_id, call.work.model, stops, calls)
        return streaming(stream, "text/event-stream")
    return JsonResponse(await _whole(call, msg_id))


MESSAGES: Resource[Messages] = Resource(
    task=Task.CHAT,
    capability=CatalogModel.Capability.TEXT_GEN,
    parse=parse,
    model=lambda m: m.body.model,
    work=work,
    respond=respond,
)
COUNT_TOKENS: Resource[Messages] = dataclasses.replace(MESSAGES, parse=parse_count)


# --- the view: Anthropic's key header and error body around the pipeline's ---------------


def anthropic(resource: Resource[Messages]) -> Any:
    # Any: django-stubs types URL targets as sync views returning a response.
    """The pipeline's view of the resource, taking Anthropic's `x-api-key` and answering
    errors with Anthropic's body and statuses (and `request-id`, its name for our
    x-request-id)."""
    inner = serve(resource)

    async def view(request: HttpRequest) -> HttpResponseBase:
        key = str(request.META.get("HTTP_X_API_KEY", "")).strip()
        if key and not request.META.get("HTTP_AUTHORIZATION"):
            request.META["HTTP_AUTHORIZATION"] = f"Bearer {key}"
            request.__dict__.pop("headers", None)  # HttpHeaders is cached from META
        response: HttpResponseBase = await inner(request)
        if response.get("X-Request-Id"):
            response["request-id"] = response["X-Request-Id"]
        if response.status_code >= 400 and not response.streaming:
            anthropic_error(response)
        return response

    view.__name__ = view.__qualname__ = f"anthropic_{resource.task}"
    return view


def anthropic_error(response: HttpResponseBase) -> None:
    """Rewrite an OpenAI error response (the pipeline's envelope) as Anthropic's."""
    try:
        found = json.loads(response.content)["error"]  # type: ignore[attr-defined]
        err = APIError(response.status_code, str(found["message"]))
    except (ValueError, KeyError, TypeError):
        err = APIError(response.status_code, "The request failed.")
    status, body = error_body(err)
    response.status_code = status
    response.content = json.dumps(body).encode()  # type: ignore[attr-defined]
