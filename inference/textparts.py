"""What a text job's events carry besides text, checked before a client sees it: tool-call
pieces and log probabilities (docs/tools.md is the contract between worker and queen).

A hive is the operator's, but its events are still input: a piece that is not what the
contract says is dropped (and logged), never passed on or allowed to crash a stream.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from hives.protocol import new_tool_call_id

logger = logging.getLogger("inference.textparts")

MAX_CALLS = 128  # calls in one answer (OpenAI allows 128 tools; one call each is plenty)
MAX_TOP = 20  # top_logprobs entries per token (OpenAI's own limit)
MAX_ID = 256  # a call id the client can send back (inference/schemas.py: ToolCall.id)


def allowed_functions(request: dict[str, Any]) -> frozenset[str]:
    """The functions a job's client let the model call: none without `tools` or with
    `tool_choice` "none", only the named one for a named choice, else every tool's."""
    choice = request.get("tool_choice")
    if choice == "none":
        return frozenset()
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return frozenset([name]) if isinstance(name, str) else frozenset()
    return frozenset(
        t["function"]["name"]
        for t in request.get("tools") or []
        if isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    )


@dataclass
class ToolCalls:
    """The tool calls of one answer, as pieces arrive: `feed` checks a delta's pieces and
    returns them in OpenAI's streaming shape (the first piece of a call carries its `id`,
    `type` and `function.name`, later ones only `function.arguments`); `calls()` is the
    whole list for a non-streamed `message.tool_calls`.

    Only calls the client allowed pass (`for_request`): a function it declared (the one
    it named), not after `tool_choice` "none", one call when `parallel_tool_calls` is
    false. Calls are numbered 0, 1, ... in the order they start, whatever the worker's
    `index`, and their ids are unique."""

    allowed: frozenset[str]
    most: int = MAX_CALLS
    _calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # worker index -> call
    _index: dict[int, int] = field(default_factory=dict)  # worker index -> ours

    @classmethod
    def for_request(cls, request: dict[str, Any]) -> ToolCalls:
        single = request.get("parallel_tool_calls") is False
        return cls(allowed_functions(request), 1 if single else MAX_CALLS)

    def feed(self, raw: Any) -> list[dict[str, Any]]:
        if not isinstance(raw, list):
            if raw is not None:
                logger.warning("dropped tool_calls that are not a list")
            return []
        out: list[dict[str, Any]] = []
        for piece in raw:
            clean = self._piece(piece)
            if clean is not None:
                out.append(clean)
        return out

    def finish_reason(self, reason: str) -> str:
        """The worker's finish reason, less a "tool_calls" with no call passed on."""
        return "stop" if reason == "tool_calls" and not self._calls else reason

    def _piece(self, piece: Any) -> dict[str, Any] | None:
        if not isinstance(piece, dict):
            logger.warning("dropped a tool-call piece that is not an object")
            return None
        index = piece.get("index")
        raw_fn = piece.get("function")
        fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
        arguments = fn.get("arguments") or ""
        if type(index) is not int or not 0 <= index < MAX_CALLS or not isinstance(arguments, str):
            logger.warning("dropped a malformed tool-call piece")
            return None
        call = self._calls.get(index)
        if call is None:
            name = fn.get("name")
            if not isinstance(name, str) or not name:
                logger.warning("dropped a tool-call piece that starts a call with no name")
                return None
            if name not in self.allowed or len(self._calls) >= self.most:
                logger.warning("dropped a tool call the request did not allow")
                return None
            cid = piece.get("id")
            used = {c["id"] for c in self._calls.values()}
            call = {
                "id": (
                    cid
                    if isinstance(cid, str) and 0 < len(cid) <= MAX_ID and cid not in used
                    else new_tool_call_id()
                ),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            self._index[index] = len(self._calls)
            self._calls[index] = call
            return {"index": self._index[index], **call, "function": dict(call["function"])}
        if not arguments:
            return None
        call["function"]["arguments"] += arguments
        return {"index": self._index[index], "function": {"arguments": arguments}}

    def calls(self) -> list[dict[str, Any]]:
        return [self._calls[i] for i in sorted(self._calls, key=self._index.__getitem__)]


def _token_entry(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    token, logprob = raw.get("token"), raw.get("logprob")
    if not isinstance(token, str) or not isinstance(logprob, int | float):
        return None
    logprob = float(logprob)
    if math.isnan(logprob) or logprob > 0:
        return None
    if math.isinf(logprob):
        logprob = -9999.0  # what OpenAI reports for "never": JSON has no -Infinity
    raw_bytes = raw.get("bytes")
    if isinstance(raw_bytes, list) and all(type(b) is int and 0 <= b < 256 for b in raw_bytes):
        token_bytes: list[int] | None = list(raw_bytes)
    else:
        token_bytes = list(token.encode("utf-8"))
    return {"token": token, "logprob": logprob, "bytes": token_bytes}


def clean_logprobs(raw: Any) -> list[dict[str, Any]]:
    """A delta's `logprobs`: [{token, logprob, bytes, top_logprobs: [{token, logprob,
    bytes}]}], one per generated token, in OpenAI's chat shape."""
    if not isinstance(raw, list):
        return []
    out: list[dict[str, Any]] = []
    for item in raw:
        entry = _token_entry(item)
        if entry is None:
            logger.warning("dropped a malformed logprobs entry")
            continue
        tops = item.get("top_logprobs") if isinstance(item.get("top_logprobs"), list) else []
        entry["top_logprobs"] = [
            t for t in (_token_entry(x) for x in tops[:MAX_TOP]) if t is not None
        ]
        out.append(entry)
    return out


def completion_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """Chat-shaped entries as the legacy completions object: tokens, token_logprobs,
    top_logprobs (token -> logprob maps) and text_offset (from `offset`, characters)."""
    tokens: list[str] = []
    token_logprobs: list[float] = []
    tops: list[dict[str, float]] = []
    offsets: list[int] = []
    for e in entries:
        tokens.append(e["token"])
        token_logprobs.append(e["logprob"])
        tops.append({t["token"]: t["logprob"] for t in e["top_logprobs"]})
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
