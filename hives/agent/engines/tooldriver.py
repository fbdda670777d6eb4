"""One answer that may call tools, for any engine that can sample text (optionally under a
GBNF grammar): llama.cpp, vLLM. The engine gives a `Source`; this module streams the
text, watches for the family's trigger, restarts under the grammar, streams the calls as
OpenAI's pieces and checks each finished call against its schema (docs/tools.md).

    forced (required, a named function)   calls under the grammar from the first token
    auto                                   free text, streamed, until the trigger appears;
                                           then generation restarts there under the grammar
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from hives.agent.engines.base import Cancelled, EngineError
from hives.agent.engines.toolformats import (
    CallStream,
    Family,
    held_back,
    invalid_arguments,
    iter_calls,
    trigger_at,
)
from hives.agent.engines.tools import ToolRequest
from hives.protocol import EventKind

# A source samples from `prompt` (token ids), under `grammar` (GBNF text) or freely, and
# yields (text, log-probability entries, tokens) per step, until the model ends; closing
# the iterator stops it.
Source = Callable[
    [list[int], str | None, bool], Generator[tuple[str, list[dict[str, Any]], int], None, None]
]


@dataclass
class ToolAnswer:
    source: Source
    tokenize: Callable[[str], list[int]]  # text the model wrote, back into tokens
    family: Family
    tools: ToolRequest
    model: str  # for errors

    def events(
        self,
        prompt: list[int],
        request: dict[str, Any],
        cancelled: Cancelled,
        budget: int,
        grammar: str,
    ) -> Iterator[dict[str, Any]]:
        generated = 0
        calls_prompt = prompt
        if not self.tools.forced:
            content, generated, finish = yield from self._free_text(
                prompt, request, cancelled, budget
            )
            if finish != "tool_calls":
                yield done(finish, len(prompt), generated)
                return
            if content:
                calls_prompt = prompt + self.tokenize(content)
        yield from self._calls(calls_prompt, len(prompt), cancelled, budget, generated, grammar)

    def _free_text(
        self, prompt: list[int], request: dict[str, Any], cancelled: Cancelled, budget: int
    ) -> Generator[dict[str, Any], None, tuple[str, int, str]]:
        """Text until the trigger: (the text before it, tokens, "tool_calls"), or the whole
        answer's (text, tokens, finish reason) when no call came."""
        family = self.family
        stops = [s for s in (request.get("stop") or []) if s]
        text = ""
        sent = 0
        generated = 0
        entries: list[dict[str, Any]] = []
        finish = "stop"
        run = self.source(prompt, None, bool(request.get("logprobs")))
        try:
            for piece, logprobs, n in run:
                if cancelled():
                    return text[:sent], generated, "cancelled"
                generated += n
                entries += logprobs
                text += piece
                if family.text_prefix and family.text_prefix.startswith(text):
                    continue  # functionary v3.2's ">>>all\n" is still being written
                at = trigger_at(family, text)
                if at >= 0:
                    before = text[:at]
                    if before[sent:].strip():
                        yield delta(visible(family, before, sent), entries, len(prompt), generated)
                    return before, generated, "tool_calls"
                hit = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if hit >= 0:
                    text, finish = text[:hit], "stop"
                    break
                keep = held_back(text, [family.trigger, *stops])
                if len(text) - keep > sent:
                    out = visible(family, text[: len(text) - keep], sent)
                    sent = len(text) - keep
                    if out:
                        yield delta(out, entries, len(prompt), generated)
                        entries = []
                if generated >= budget:
                    finish = "length"
                    break
        finally:
            run.close()
        if len(text) > sent:
            out = visible(family, text, sent)
            if out:
                yield delta(out, entries, len(prompt), generated)
        return text, generated, finish

    def _calls(
        self,
        prompt: list[int],
        prompt_tokens: int,
        cancelled: Cancelled,
        budget: int,
        generated: int,
        grammar: str,
    ) -> Iterator[dict[str, Any]]:
        stream = CallStream(self.family)
        text = ""
        finish = "tool_calls"
        run = self.source(prompt, grammar, False)  # a call's tokens are not content
        try:
            for piece, _, n in run:
                if cancelled():
                    finish = "cancelled"
                    break
                generated += n
                text += piece
                pieces = stream.feed(text)
                if pieces:
                    yield {
                        "kind": EventKind.DELTA,
                        "tool_calls": pieces,
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": generated,
                    }
                if generated >= budget:
                    finish = "length"
                    break
        finally:
            run.close()
        if finish == "tool_calls":
            # The grammar holds what the converter can express; the rest (wide numeric
            # bounds) is checked here, so an invalid call is never passed off as valid.
            for name, arguments in iter_calls(self.family, text):
                why = invalid_arguments(self.tools.allowed(), name, arguments)
                if why is not None:
                    raise EngineError(
                        f"The model {self.model!r} wrote a call that does not fit its "
                        f"schema ({why}); retry, or relax the schema.",
                        status=500,
                        code="invalid_tool_call",
                    )
        yield done(finish if stream.count else "stop", prompt_tokens, generated)


def visible(family: Family, text: str, sent: int) -> str:
    """text[sent:], less a functionary v3.2 text prefix."""
    prefix = family.text_prefix
    start = len(prefix) if prefix and text.startswith(prefix) else 0
    return text[max(sent, start) :]


def delta(
    text: str, entries: list[dict[str, Any]], prompt_tokens: int, generated: int
) -> dict[str, Any]:
    """A text delta with running counts (a stream cut short is still metered exactly) and
    the log probabilities of its tokens, when asked for."""
    event: dict[str, Any] = {
        "kind": EventKind.DELTA,
        "text": text,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated,
    }
    if entries:
        event["logprobs"] = list(entries)
    return event


def done(finish: str, prompt_tokens: int, generated: int) -> dict[str, Any]:
    return {
        "kind": EventKind.DONE,
        "finish_reason": finish,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated},
    }
