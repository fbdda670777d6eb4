"""Request bodies of the OpenAI API, validated strictly (400 naming the param, never 422).

Where OpenAI's own OpenAPI description is stricter than other servers, we follow it.
Unknown top-level fields are ignored (as OpenAI-compatible servers do, so clients
sending vendor extras keep working); fields we know but cannot honour are refused
with a clear message rather than ignored.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from inference.errors import APIError, bad_request
from kernel.schemarefs import outside_ref


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Form(BaseModel):
    """A multipart form: every value arrives as a string, so types are coerced."""

    model_config = ConfigDict(extra="allow", strict=False)


_M = TypeVar("_M", bound=BaseModel)


# OpenAI: "a-z, A-Z, 0-9, or contain underscores and dashes, with a maximum length of 64".
FunctionName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MAX_TOOLS = 128  # OpenAI's limit on `tools`


class ToolCallFunction(_Strict):
    name: FunctionName
    arguments: StrictStr


class ToolCall(_Strict):
    """One call in an assistant message's `tool_calls` (the history a client sends back)."""

    id: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    type: Literal["function"]
    function: ToolCallFunction


class FunctionDefinition(_Strict):
    name: FunctionName
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoiceFunction(_Strict):
    name: FunctionName


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedToolChoiceFunction


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[dict[str, Any]] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None


class StreamOptions(_Strict):
    include_usage: StrictBool = False


Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
SeedInt = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
# No model here writes a million tokens in one answer; a larger limit is a mistake (or an
# attack on the reservation arithmetic), not a request.
MAX_OUTPUT_TOKENS = 1_000_000
TokenLimit = Annotated[StrictInt, Field(ge=1, le=MAX_OUTPUT_TOKENS)]


class ChatCompletionRequest(_Strict):
    model: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    seed: SeedInt | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    response_format: dict[str, Any] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    logit_bias: dict[str, Any] | None = None
    user: StrictStr | None = None


_PYDANTIC_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after"}


def _param(loc: tuple[int | str, ...]) -> str:
    """Turn pydantic's error location into OpenAI's param path, e.g. messages[0].role."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) and part not in _PYDANTIC_TAGS:
            out += ("." if out else "") + part
        # else: a union branch tag such as 'list[str]' or 'constrained-int'
    return out


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "is required"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return err["msg"].lower().replace("input ", "")
    if kind == "literal_error":
        return err["msg"].replace("Input ", "")
    if kind.endswith("_type") or kind in ("model_type", "model_attributes_type"):
        return f"has the wrong type: {err['msg'].lower()}"
    if kind in ("too_short", "too_long"):
        return err["msg"].replace("List ", "list ").replace("String ", "string ")
    return str(err.get("msg", "is invalid"))


# How deep a body may nest (the body itself is depth 1). OpenAI's own bodies need a handful
# of levels; a JSON schema in response_format a few dozen.
MAX_JSON_DEPTH = 64
# The longest integer literal accepted: int64 needs 19 digits; longer ones are refused
# before Python converts them (quadratic in the digits).
MAX_INT_DIGITS = 100


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is larger than any value accepted")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether value nests lists and objects more than limit levels deep (iteratively:
    no recursion for an attacker to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _nested_too_deeply() -> APIError:
    return bad_request(
        f"The JSON body of your request is nested too deeply (at most {MAX_JSON_DEPTH} levels).",
        code="invalid_json",
    )


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A JSON object (400 `invalid_json` otherwise): strict JSON (no NaN or Infinity), no
    integer of absurd length, nested at most MAX_JSON_DEPTH levels."""
    try:
        data = json.loads(raw, parse_int=_parse_int, parse_constant=_parse_constant)
    except RecursionError as exc:  # nested deeper than the interpreter goes
        raise _nested_too_deeply() from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise bad_request(
            f"We could not parse the JSON body of your request: {exc}. "
            "The body must be a JSON object.",
            code="invalid_json",
        ) from exc
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    if _too_deep(data, MAX_JSON_DEPTH):
        raise _nested_too_deeply()
    return data


def validate_chat(data: dict[str, Any]) -> ChatCompletionRequest:
    req = _validate(ChatCompletionRequest, data)
    _check_chat_semantics(req)
    return req


def _validate(model: type[_M], data: dict[str, Any]) -> _M:
    """Validate one request body; the first error becomes a 400 naming its param."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        param = _param(tuple(first.get("loc", ()))) or None
        # A union (stop: str | list[str]) reports one error per branch: the type error
        # of the branch that did not apply says less than, e.g., "at most 4 items".
        for err in errors:
            if _param(tuple(err.get("loc", ()))) == param and not str(err.get("type", "")).endswith(
                "_type"
            ):
                first = err
                break
        raise bad_request(
            f"Invalid value for '{param}': {_describe(dict(first))}."
            if param
            else str(first["msg"]),
            param=param,
            code="invalid_value"
            if first.get("type") != "missing"
            else "missing_required_parameter",
        ) from exc


def _check_stream_options(options: Any, stream: bool | None) -> None:
    if options is not None and not stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )


def _refuse(param: str, what: str) -> APIError:
    return bad_request(
        f"'{param}' is not supported: {what}.", param=param, code="unsupported_parameter"
    )


def _check_chat_semantics(req: ChatCompletionRequest) -> None:
    for i, msg in enumerate(req.messages):
        if isinstance(msg.content, list):
            for j, part in enumerate(msg.content):
                ptype = part.get("type")
                if ptype == "text":
                    if not isinstance(part.get("text"), str):
                        raise bad_request(
                            f"Invalid value for 'messages[{i}].content[{j}].text': "
                            "expected a string.",
                            param=f"messages[{i}].content[{j}].text",
                            code="invalid_value",
                        )
                elif ptype in ("image_url", "input_audio", "file", "refusal"):
                    raise bad_request(
                        f"Content parts of type '{ptype}' are not supported by this model; "
                        "only 'text' parts are.",
                        param=f"messages[{i}].content[{j}].type",
                        code="unsupported_content",
                    )
                else:
                    raise bad_request(
                        f"Invalid value for 'messages[{i}].content[{j}].type': {ptype!r}.",
                        param=f"messages[{i}].content[{j}].type",
                        code="invalid_value",
                    )
        elif msg.content is None and msg.role != "assistant":
            raise bad_request(
                f"Invalid value for 'messages[{i}].content': a {msg.role} message needs content.",
                param=f"messages[{i}].content",
                code="invalid_value",
            )
    _check_tool_history(req.messages)
    _check_stream_options(req.stream_options, req.stream)
    if req.n is not None and req.n > 1:
        raise _refuse("n", "this server returns one choice per request; send several requests")
    _check_tools(req)
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
            "'top_logprobs' is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    if req.logit_bias:
        raise _refuse("logit_bias", "logit bias is not applied by this server")
    if req.response_format is not None:
        rtype = req.response_format.get("type")
        if rtype == "json_schema":
            spec = req.response_format.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
                raise bad_request(
                    "Invalid value for 'response_format.json_schema': an object with a "
                    "'schema' object is required.",
                    param="response_format.json_schema",
                    code="invalid_value",
                )
            _check_refs(
                spec["schema"],
                "The JSON schema",
                "response_format.json_schema.schema",
                "invalid_value",
            )
        elif rtype not in ("text", "json_object"):
            raise bad_request(
                f"Invalid value for 'response_format.type': {rtype!r} is not one of "
                "'text', 'json_object', 'json_schema'.",
                param="response_format.type",
                code="invalid_value",
            )


def _check_tool_history(messages: list[ChatMessage]) -> None:
    """OpenAI's rules for a conversation with calls in it: only assistant messages carry
    `tool_calls`; a `tool` message names the call it answers, one made by the assistant
    message just before it (with only other answers in between); and every call made is
    answered before the conversation goes on."""
    open_calls: dict[str, None] = {}  # ids of the last assistant message's calls, unanswered
    open_from = -1
    for i, msg in enumerate(messages):
        if msg.tool_calls is not None and msg.role != "assistant":
            raise bad_request(
                f"Invalid parameter: only 'assistant' messages may have 'tool_calls' "
                f"(messages[{i}] has role '{msg.role}').",
                param=f"messages[{i}].tool_calls",
                code="invalid_value",
            )
        if msg.role == "tool":
            if msg.tool_call_id is None:
                raise bad_request(
                    f"Missing parameter 'tool_call_id': messages with role 'tool' must have "
                    f"a 'tool_call_id' (messages[{i}]).",
                    param=f"messages[{i}].tool_call_id",
                    code="missing_required_parameter",
                )
            if open_from < 0 or msg.tool_call_id not in open_calls:
                raise bad_request(
                    f"Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (messages[{i}].tool_call_id "
                    f"{msg.tool_call_id!r} answers no call of it).",
                    param=f"messages[{i}].tool_call_id",
                    code="invalid_value",
                )
            del open_calls[msg.tool_call_id]
            continue
        _check_answered(open_calls, open_from)
        open_calls, open_from = {}, -1
        if msg.role == "assistant" and msg.tool_calls:
            open_calls = dict.fromkeys(c.id for c in msg.tool_calls)
            if len(open_calls) != len(msg.tool_calls):
                raise bad_request(
                    f"Invalid value for 'messages[{i}].tool_calls': two calls share one id.",
                    param=f"messages[{i}].tool_calls",
                    code="invalid_value",
                )
            open_from = i
    _check_answered(open_calls, open_from)


def _check_answered(open_calls: dict[str, None], at: int) -> None:
    if open_calls:
        raise bad_request(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(open_calls)}",
            param=f"messages[{at}].tool_calls",
            code="invalid_value",
        )


def _check_tools(req: ChatCompletionRequest) -> None:
    if req.functions is not None or req.function_call is not None:
        param = "functions" if req.functions is not None else "function_call"
        raise _refuse(param, "the deprecated functions API is not served; send 'tools'")
    if not req.tools:
        if req.tools is not None:
            raise bad_request(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="tools",
                code="empty_array",
            )
        for param, value in (
            ("tool_choice", req.tool_choice),
            ("parallel_tool_calls", req.parallel_tool_calls),
        ):
            if value is not None:
                raise bad_request(
                    f"Invalid value for '{param}': '{param}' is only allowed when 'tools' "
                    "are specified.",
                    param=param,
                    code="invalid_value",
                )
        return
    names: set[str] = set()
    for i, tool in enumerate(req.tools):
        fn = tool.function
        if fn.name in names:
            raise bad_request(
                f"Invalid 'tools': the function name {fn.name!r} is used twice "
                f"(tools[{i}].function.name).",
                param=f"tools[{i}].function.name",
                code="invalid_value",
            )
        names.add(fn.name)
        if fn.parameters is not None:
            _check_parameters_schema(fn.parameters, fn.name, f"tools[{i}].function.parameters")
    if isinstance(req.tool_choice, NamedToolChoice) and req.tool_choice.function.name not in names:
        raise bad_request(
            f"Invalid value for 'tool_choice': no function named "
            f"{req.tool_choice.function.name!r} was specified in the 'tools' parameter.",
            param="tool_choice",
            code="invalid_value",
        )


def _check_parameters_schema(schema: dict[str, Any], name: str, param: str) -> None:
    """A function's parameters: a valid JSON Schema describing an object."""
    from jsonschema import exceptions, validators

    if schema.get("type", "object") != "object":
        raise bad_request(
            f"Invalid schema for function {name!r}: schema must be a JSON Schema of "
            f"'type: \"object\"', got 'type: {json.dumps(schema.get('type'))}'.",
            param=param,
            code="invalid_function_parameters",
        )
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        raise bad_request(
            f"Invalid schema for function {name!r}: {exc.message}.",
            param=param,
            code="invalid_function_parameters",
        ) from exc
    _check_refs(schema, f"The schema of function {name!r}", param, "invalid_function_parameters")


def _check_refs(schema: dict[str, Any], what: str, param: str, code: str) -> None:
    """Only references inside the schema: a URL in `$ref` would be fetched by the hive."""
    ref = outside_ref(schema)
    if ref is not None:
        raise bad_request(
            f"{what} refers outside itself ({ref!r}); only references inside the schema "
            "('#', '#/$defs/...') are supported.",
            param=param,
            code=code,
        )


def message_text(msg: ChatMessage) -> str:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    return "".join(str(p.get("text", "")) for p in msg.content)


def chat_job_request(req: ChatCompletionRequest) -> dict[str, Any]:
    """What the hive's engine receives: plain messages and sampling parameters."""
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    job: dict[str, Any] = {
        "messages": [_job_message(m) for m in req.messages],
        "max_tokens": req.max_completion_tokens or req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": stop,
        "seed": req.seed,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
        "response_format": _response_format(req.response_format),
    }
    # Only when asked for, so an engine that knows nothing of tools or log probabilities
    # sees exactly the request it always did (docs/tools.md is the contract).
    if req.tools:
        job["tools"] = [_job_tool(t) for t in req.tools]
        choice = req.tool_choice or "auto"
        job["tool_choice"] = (
            choice
            if isinstance(choice, str)
            else {"type": "function", "function": {"name": choice.function.name}}
        )
        job["parallel_tool_calls"] = req.parallel_tool_calls is not False
    if req.logprobs:
        job["logprobs"] = True
        job["top_logprobs"] = req.top_logprobs or 0
    return job


def _job_message(m: ChatMessage) -> dict[str, Any]:
    """A history message as the worker gets it: OpenAI's chat wire format, text only."""
    out: dict[str, Any] = {"role": m.role, "content": message_text(m)}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in m.tool_calls
        ]
        if m.content is None:
            out["content"] = None
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            out["name"] = m.name
    return out


def _job_tool(tool: Tool) -> dict[str, Any]:
    """A tool as the worker gets it: only the fields OpenAI defines (no client extras)."""
    fn: dict[str, Any] = {"name": tool.function.name}
    if tool.function.description is not None:
        fn["description"] = tool.function.description
    fn["parameters"] = (
        tool.function.parameters
        if tool.function.parameters is not None
        else {"type": "object", "properties": {}}
    )
    if tool.function.strict is not None:
        fn["strict"] = tool.function.strict
    return {"type": "function", "function": fn}


def _response_format(rf: dict[str, Any] | None) -> dict[str, Any] | None:
    """None for plain text; else {"type": "json_object"} or {"type": "json_schema", "schema"}."""
    if not rf or rf.get("type") == "text":
        return None
    if rf.get("type") == "json_schema":
        return {"type": "json_schema", "schema": rf["json_schema"]["schema"]}
    return {"type": "json_object"}


# --- /v1/completions -----------------------------------------------------------------

ModelName = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class CompletionRequest(_Strict):
    model: ModelName
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=1)] | list[Any]
    max_tokens: Annotated[StrictInt, Field(ge=0, le=MAX_OUTPUT_TOKENS)] | None = 16
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    best_of: Annotated[StrictInt, Field(ge=1, le=20)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=4)] | None = None
    seed: SeedInt | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    echo: StrictBool | None = None
    suffix: StrictStr | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=5)] | None = None
    logit_bias: dict[str, Any] | None = None
    user: StrictStr | None = None


def validate_completion(data: dict[str, Any]) -> CompletionRequest:
    req = _validate(CompletionRequest, data)
    if isinstance(req.prompt, list):
        if len(req.prompt) != 1 or not isinstance(req.prompt[0], str):
            raise bad_request(
                "Invalid value for 'prompt': send one string (or a list of one string); "
                "token arrays and batches of prompts are not supported.",
                param="prompt",
                code="unsupported_parameter",
            )
    _check_stream_options(req.stream_options, req.stream)
    if req.n is not None and req.n > 1:
        raise _refuse("n", "this server returns one choice per request; send several requests")
    if req.best_of is not None and req.best_of > 1:
        raise _refuse("best_of", "this server returns one choice per request")
    if req.suffix:
        raise _refuse("suffix", "insertion (fill-in-the-middle) is not supported")
    if req.logprobs is not None and req.echo:
        raise _refuse("logprobs", "log probabilities of an echoed prompt are not returned")
    if req.logit_bias:
        raise _refuse("logit_bias", "logit bias is not applied by this server")
    return req


def completion_prompt(req: CompletionRequest) -> str:
    return req.prompt if isinstance(req.prompt, str) else str(req.prompt[0])


def completion_job_request(req: CompletionRequest) -> dict[str, Any]:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    job: dict[str, Any] = {
        "prompt": completion_prompt(req),
        # OpenAI's default, also for an explicit null (the engines read None as "to the
        # end of the context", thousands of tokens nobody asked for).
        "max_tokens": 16 if req.max_tokens is None else req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": stop,
        "seed": req.seed,
        "presence_penalty": req.presence_penalty,
        "frequency_penalty": req.frequency_penalty,
    }
    if req.logprobs is not None:  # 0: the chosen tokens' own log probabilities only
        job["logprobs"] = True
        job["top_logprobs"] = req.logprobs
    return job


# --- /v1/responses ----------------------------------------------------------------


class ResponsesRequest(_Strict):
    """POST /v1/responses (inference/responses.py checks and translates it further)."""

    model: ModelName
    input: StrictStr | list[dict[str, Any]]
    instructions: StrictStr | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    max_output_tokens: TokenLimit | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, StrictStr] | None = None
    user: Annotated[StrictStr, Field(max_length=256)] | None = None
    store: StrictBool | None = None
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    previous_response_id: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    include: list[StrictStr] | None = None
    prompt_cache_key: Annotated[StrictStr, Field(max_length=256)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: StrictBool | None = None
    conversation: Any = None
    prompt: Any = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None

    # The conversation before `input` (the stored previous response's), set by `bind`.
    _history: list[dict[str, Any]] = PrivateAttr(default_factory=list)


def validate_responses(data: dict[str, Any]) -> ResponsesRequest:
    return _validate(ResponsesRequest, data)


# --- /v1/embeddings -------------------------------------------------------------------

MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_DIMENSIONS = 65536


class EmbeddingRequest(_Strict):
    model: ModelName
    input: StrictStr | list[Any]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[StrictInt, Field(ge=1, le=MAX_EMBEDDING_DIMENSIONS)] | None = None
    user: StrictStr | None = None


def validate_embedding(data: dict[str, Any]) -> EmbeddingRequest:
    req = _validate(EmbeddingRequest, data)
    ids = _token_arrays(req.input)
    items: list[Any] = (
        embedding_inputs(req) if ids else [req.input] if isinstance(req.input, str) else req.input
    )
    if not items:
        raise bad_request(
            "Invalid value for 'input': the list is empty.", param="input", code="invalid_value"
        )
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise bad_request(
            f"Invalid value for 'input': at most {MAX_EMBEDDING_INPUTS} inputs per request.",
            param="input",
            code="invalid_value",
        )
    for i, item in enumerate(items):
        where = f"input[{i}]" if not isinstance(req.input, str) else "input"
        if isinstance(item, list) and ids:
            if not item:
                raise bad_request(
                    f"Invalid value for '{where}': a token array cannot be empty.",
                    param=where,
                    code="invalid_value",
                )
            bad = next((t for t in item if not _token_id(t)), None)
            if bad is not None:
                raise bad_request(
                    f"Invalid value for '{where}': token ids are integers from 0 up; "
                    f"{json.dumps(bad)[:40]} is not one.",
                    param=where,
                    code="invalid_value",
                )
        elif not isinstance(item, str):
            raise bad_request(
                f"Invalid value for '{where}': send strings, an array of token ids, or "
                "an array of token-id arrays (not mixed).",
                param=where,
                code="invalid_value",
            )
        elif not item:
            raise bad_request(
                f"Invalid value for '{where}': an input cannot be an empty string.",
                param=where,
                code="invalid_value",
            )
    return req


MAX_TOKEN_ID = 2**31 - 1


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_ID


def _token_arrays(value: Any) -> bool:
    """Whether an embedding input is given as token ids: one array of ints (one input)
    or an array of arrays (one input each), as OpenAI accepts."""
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return True
    return all(isinstance(x, list) for x in value)


def embedding_inputs(req: EmbeddingRequest) -> list[str] | list[list[int]]:
    """The inputs, one per vector: texts, or token-id arrays (the model's own ids)."""
    if isinstance(req.input, str):
        return [req.input]
    if req.input and all(isinstance(x, int) and not isinstance(x, bool) for x in req.input):
        return [list(req.input)]
    if req.input and all(isinstance(x, list) for x in req.input):
        return [list(x) for x in req.input]
    return [str(x) for x in req.input]


# --- /v1/images ------------------------------------------------------------------------

SIZE_RE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
MAX_IMAGE_UPLOAD = 4 * 1024 * 1024  # OpenAI: "less than 4MB"


def _check_size(size: str | None) -> None:
    if size is not None and size != "auto" and not SIZE_RE.match(size):
        raise bad_request(
            f"Invalid value for 'size': {size!r} is not of the form WIDTHxHEIGHT (e.g. 512x512).",
            param="size",
            code="invalid_value",
        )


class ImageGenerationRequest(_Strict):
    model: ModelName | None = None
    prompt: Annotated[StrictStr, Field(min_length=1, max_length=4000)]
    n: Annotated[StrictInt, Field(ge=1, le=10)] | None = 1
    size: StrictStr | None = None
    response_format: Literal["url", "b64_json"] | None = None
    quality: StrictStr | None = None
    style: StrictStr | None = None
    seed: SeedInt | None = None
    steps: Annotated[StrictInt, Field(ge=1, le=200)] | None = None
    guidance_scale: Annotated[float, Field(ge=0.0, le=50.0)] | None = None
    negative_prompt: Annotated[StrictStr, Field(max_length=4000)] | None = None
    user: StrictStr | None = None


def validate_image_generation(data: dict[str, Any]) -> ImageGenerationRequest:
    req = _validate(ImageGenerationRequest, data)
    _check_size(req.size)
    return req


class ImageVariationForm(_Form):
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    n: Annotated[int, Field(ge=1, le=10)] | None = 1
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    prompt: Annotated[str, Field(max_length=4000)] | None = None
    strength: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    user: str | None = None


def validate_image_variation(data: dict[str, Any]) -> ImageVariationForm:
    req = _validate(ImageVariationForm, data)
    _check_size(req.size)
    return req


def image_kind(data: bytes) -> str | None:
    """The format of an uploaded image by its magic bytes (the worker decodes it fully)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


# --- /v1/audio -------------------------------------------------------------------------

AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
MAX_AUDIO_UPLOAD = 25 * 1024 * 1024  # OpenAI: "File uploads are currently limited to 25 MB"


class TranscriptionForm(_Form):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    language: Annotated[str, Field(min_length=2, max_length=3, pattern=r"^[a-zA-Z]+$")] | None = (
        None
    )
    prompt: Annotated[str, Field(max_length=4000)] | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    timestamp_granularities: list[Literal["word", "segment"]] | None = None


def validate_transcription(data: dict[str, Any]) -> TranscriptionForm:
    return _validate(TranscriptionForm, data)


def check_audio_upload(name: str, data: bytes) -> None:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in AUDIO_EXTENSIONS:
        raise bad_request(
            f"Invalid file format {('.' + ext) if ext else '(no extension)'}. Supported formats: "
            + str(list(AUDIO_EXTENSIONS)),
            param="file",
            code="invalid_file_format",
        )
    if not data:
        raise bad_request("The audio file is empty.", param="file", code="invalid_value")
    if len(data) > MAX_AUDIO_UPLOAD:
        raise APIError(
            413,
            f"Maximum content size limit ({MAX_AUDIO_UPLOAD} bytes) exceeded "
            f"({len(data)} bytes read).",
            param="file",
            code="file_too_large",
        )


MAX_SPEECH_INPUT = 4096


class SpeechRequest(_Strict):
    model: ModelName
    input: Annotated[StrictStr, Field(min_length=1, max_length=MAX_SPEECH_INPUT)]
    voice: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: Annotated[float, Field(ge=0.25, le=4.0)] | None = None
    instructions: StrictStr | None = None
    stream_format: Literal["audio", "sse"] | None = None


def validate_speech(data: dict[str, Any]) -> SpeechRequest:
    if isinstance(data.get("input"), str) and len(data["input"]) > MAX_SPEECH_INPUT:
        raise bad_request(
            f"Invalid value for 'input': the text is {len(data['input'])} characters long; "
            f"the maximum is {MAX_SPEECH_INPUT}.",
            param="input",
            code="string_above_max_length",
        )
    req = _validate(SpeechRequest, data)
    if not req.input.strip():
        raise bad_request(
            "Invalid value for 'input': there is no text to speak.",
            param="input",
            code="invalid_value",
        )
    if req.instructions:
        raise _refuse("instructions", "this server's voices cannot be steered by instructions")
    if req.stream_format == "sse":
        raise _refuse("stream_format", "only 'audio' streaming is offered")
    return req


# --- videos ------------------------------------------------------------------------------

VIDEO_SECONDS_RE = re.compile(r"^[1-9][0-9]{0,2}$")


class VideoRequest(_Form):
    """POST /v1/videos, as JSON or a multipart form (OpenAI documents both). Values are
    coerced as a form's are: `seconds` is a string of whole seconds, as OpenAI's."""

    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    prompt: Annotated[str, Field(min_length=1, max_length=32000)]
    seconds: str | None = None
    size: str | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    steps: Annotated[int, Field(ge=1, le=200)] | None = None
    negative_prompt: Annotated[str, Field(max_length=4000)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


def validate_video(data: dict[str, Any]) -> VideoRequest:
    for name in ("model", "prompt", "size", "negative_prompt", "user"):
        if name in data and data[name] is not None and not isinstance(data[name], str):
            raise bad_request(
                f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type"
            )
    seconds = data.get("seconds")
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        data = {**data, "seconds": str(seconds)}
    elif seconds is not None and not isinstance(seconds, str):
        raise bad_request(
            "Invalid type for 'seconds': expected a string such as '4'.",
            param="seconds",
            code="invalid_type",
        )
    if data.get("input_reference") is not None:
        raise _refuse("input_reference", "this server generates videos from text prompts only")
    req = _validate(VideoRequest, data)
    if req.seconds is not None and not VIDEO_SECONDS_RE.match(req.seconds):
        raise bad_request(
            f"Invalid value for 'seconds': {req.seconds!r} is not a whole number of seconds "
            "(e.g. '4', '8', '12').",
            param="seconds",
            code="invalid_value",
        )
    if not req.prompt.strip():
        raise bad_request(
            "Invalid value for 'prompt': the prompt is empty.", param="prompt", code="invalid_value"
        )
    if req.size is not None and not SIZE_RE.match(req.size):
        raise bad_request(
            f"Invalid value for 'size': {req.size!r} is not of the form WIDTHxHEIGHT "
            "(e.g. 1280x720).",
            param="size",
            code="invalid_value",
        )
    return req
