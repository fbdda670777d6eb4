"""Tool calling, engine side: what every text engine shares (docs/tools.md is the
contract with the queen).

A chat request may carry `tools` (OpenAI's function tools), `tool_choice` ("none",
"auto", "required" or {"type": "function", "function": {"name"}}) and
`parallel_tool_calls`; history messages may carry `tool_calls` and role `tool`. An engine
answers calls as DELTA events whose `tool_calls` are OpenAI's streaming pieces (see
`call_pieces`) and ends with finish_reason "tool_calls".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hives.agent.engines.base import EngineError
from hives.protocol import EventKind, new_tool_call_id

ARGUMENT_PIECE = 16  # characters of `arguments` per streamed piece


@dataclass(frozen=True)
class ToolRequest:
    """A chat request's tools, read once: which functions, and what must happen."""

    tools: list[dict[str, Any]]  # the function objects: {name, description?, parameters}
    choice: str  # "none" | "auto" | "required" | "named"
    named: str | None  # the function tool_choice names
    parallel: bool

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        """Whether the answer must be a call (required, or a named function)."""
        return self.active and self.choice in ("required", "named")

    def function(self, name: str) -> dict[str, Any] | None:
        return next((f for f in self.tools if f.get("name") == name), None)

    def allowed(self) -> list[dict[str, Any]]:
        """The functions the model may call."""
        if self.choice == "named":
            fn = self.function(str(self.named))
            return [fn] if fn else []
        return self.tools if self.active else []


def tool_request(request: dict[str, Any]) -> ToolRequest:
    tools = [
        dict(t["function"])
        for t in request.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    choice = request.get("tool_choice") or ("auto" if tools else "none")
    named = None
    if isinstance(choice, dict):
        named = str((choice.get("function") or {}).get("name") or "")
        choice = "named"
    return ToolRequest(
        tools=tools,
        choice=str(choice),
        named=named,
        parallel=request.get("parallel_tool_calls") is not False,
    )


def call_pieces(
    index: int, name: str, arguments: str, *, call_id: str | None = None
) -> Iterator[dict[str, Any]]:
    """One call as OpenAI streams it: the head (index, id, type, name, empty arguments),
    then the arguments in pieces."""
    yield {
        "index": index,
        "id": call_id or new_tool_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    for at in range(0, len(arguments), ARGUMENT_PIECE):
        yield {"index": index, "function": {"arguments": arguments[at : at + ARGUMENT_PIECE]}}


def call_events(
    calls: list[tuple[str, str]], *, usage: dict[str, int] | None = None
) -> Iterator[dict[str, Any]]:
    """DELTA events for whole calls [(name, arguments JSON)], one piece per event (the
    queen relays each as one chunk). `usage` adds running counts for the meter."""
    for index, (name, arguments) in enumerate(calls):
        for piece in call_pieces(index, name, arguments):
            yield {"kind": EventKind.DELTA, "tool_calls": [piece], **(usage or {})}


def sample_arguments(schema: Any) -> Any:
    """A small value that satisfies a JSON schema's type constraints, built from its
    required properties: for engines (echo) and tests that need a valid call without a
    model. Deterministic."""
    if not isinstance(schema, dict):
        return {}
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return sample_arguments(options[0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        raw_props = schema.get("properties")
        props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        return {name: sample_arguments(props.get(name, {})) for name in required}
    if kind == "array":
        n = int(schema.get("minItems") or 0)
        return [sample_arguments(schema.get("items", {})) for _ in range(n)]
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength") or 1))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return None


def refuse_tools(request: dict[str, Any], model: str) -> None:
    """For an engine or model that cannot call tools: a clear 400 naming the model,
    never a silent drop of the caller's tools."""
    if tool_request(request).active:
        raise EngineError(
            f"The model {model!r} does not support tool calling.",
            status=400,
            code="unsupported_parameter",
            param="tools",
        )


def refuse_logprobs(request: dict[str, Any], model: str) -> None:
    if request.get("logprobs"):
        raise EngineError(
            f"The model {model!r} does not return log probabilities.",
            status=400,
            code="unsupported_parameter",
            param="logprobs",
        )


def arguments_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
