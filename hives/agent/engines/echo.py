"""An engine that answers at once by echoing the last user message, word by word.

For measuring what the queen and the hive add (bench/overhead.py, bench/relay.py) and
nothing else: it is never served unless a hive is started with `--model NAME=echo:`.
`--model NAME=echo:?slots=64` runs up to 64 jobs at once (each on a thread of the
worker), so many concurrent streams reach the hive together, as they would from a
batching engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError
from hives.protocol import Capability, EventKind
from hives.spec import ModelSpec


class EchoEngine(Engine):
    name = "echo"
    capabilities = (Capability.TEXT_GEN,)

    def load(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.slots = max(1, int(spec.options.get("slots") or 1))

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
        messages = request.get("messages") or []
        last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        words = str(last).split() or [""]
        limit = request.get("max_tokens") or len(words)
        n = 0
        for i, word in enumerate(words[:limit]):
            if cancelled():
                break
            n += 1
            yield {"kind": EventKind.DELTA, "text": word if i == 0 else " " + word}
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        yield {
            "kind": EventKind.DONE,
            "finish_reason": "length" if limit < len(words) else "stop",
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n},
        }
