"""An engine that answers at once by echoing the last user message, word by word.

For measuring what the queen and the hive add (bench/overhead.py), and for testing tool
flows without a model: it is never served unless a hive is started with
`--model NAME=echo:`.

Tools, deterministically (docs/tools.md): with tool_choice "required" or a named
function, or "auto" when the last message is the user's and starts with "call ", it
calls functions instead of echoing: the named one; else those the message names after
"call " (in order; all of them only when parallel_tool_calls allows, else the first), or
the first tool. Arguments hold the schema's required properties (`sample_arguments`).
After a tool result (the last message has role "tool") it answers with that result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError
from hives.agent.engines.tools import (
    ToolRequest,
    arguments_json,
    call_events,
    refuse_logprobs,
    sample_arguments,
    tool_request,
)
from hives.protocol import Capability, EventKind
from hives.spec import ModelSpec


class EchoEngine(Engine):
    name = "echo"
    capabilities = (Capability.TEXT_GEN,)

    def load(self, spec: ModelSpec) -> None:
        self.spec = spec

    def unload(self) -> None:
        pass

    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        if request.get("response_format"):
            raise EngineError(
                "the echo engine cannot produce structured output",
                status=400,
                code="unsupported_parameter",
                param="response_format",
            )
        refuse_logprobs(request, self.spec.name)
        messages = request.get("messages") or []
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        tools = tool_request(request)
        calls = _calls(tools, messages)
        if calls:
            yield from call_events(calls)
            yield {
                "kind": EventKind.DONE,
                "finish_reason": "tool_calls",
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(calls)},
            }
            return
        if messages and messages[-1].get("role") == "tool":
            last = messages[-1].get("content") or ""
        else:
            last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        words = str(last).split() or [""]
        limit = request.get("max_tokens") or len(words)
        n = 0
        for i, word in enumerate(words[:limit]):
            if cancelled():
                break
            n += 1
            yield {"kind": EventKind.DELTA, "text": word if i == 0 else " " + word}
        yield {
            "kind": EventKind.DONE,
            "finish_reason": "length" if limit < len(words) else "stop",
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n},
        }


def _calls(tools: ToolRequest, messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The calls the echo engine makes: [(name, arguments JSON)], or none."""
    allowed = tools.allowed()
    if not allowed:
        return []
    last = messages[-1] if messages else {}
    text = str(last.get("content") or "") if last.get("role") == "user" else ""
    asked = text.lower().startswith("call ")
    if not tools.forced and not asked:
        return []
    chosen = allowed[:1]
    if asked and tools.choice != "named":
        words = text[5:].replace(",", " ").split()
        named = [fn for w in words for fn in allowed if fn.get("name") == w]
        chosen = named or chosen
    if not tools.parallel:
        chosen = chosen[:1]
    return [
        (str(fn["name"]), arguments_json(sample_arguments(fn.get("parameters")))) for fn in chosen
    ]
