"""llama.cpp (through llama-cpp-python): GGUF text models on CPU and Apple Metal.

Generation is driven token by token here rather than through
create_chat_completion, so that usage counts are exact (the prompt's tokens and
each generated token, streaming or not), stop sequences never leak a partial
match into the stream, and cancellation is checked between tokens.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import queue
import random
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError, token_budget
from hives.agent.engines.tooldriver import ToolAnswer, delta
from hives.agent.engines.toolformats import Family, detect, held_back, render_messages
from hives.agent.engines.tools import ToolRequest, tool_request
from hives.protocol import Capability, EventKind
from hives.spec import DeviceKind, ModelSpec

logger = logging.getLogger("hives.engine.llamacpp")

DEFAULT_TEMPERATURE = 0.8  # llama.cpp's own defaults when the request says nothing
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40


def default_threads() -> int:
    env = os.environ.get("RBEE_LLAMA_THREADS")
    if env:
        return max(1, int(env))
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaCppEngine(Engine):
    name = "llama.cpp"
    capabilities = (Capability.TEXT_GEN,)

    def __init__(self) -> None:
        self.llm: Any = None
        self.formatter: Any = None
        # Slots: one llama.cpp context (KV cache) per concurrent job. The weights are
        # memory-mapped, so the contexts share one copy of them in RAM.
        self.contexts: queue.Queue[Any] = queue.Queue()
        self._all: list[Any] = []

    @staticmethod
    def slot_count(spec: ModelSpec) -> int:
        return max(1, int(spec.options.get("slots") or os.environ.get("RBEE_LLAMA_SLOTS") or 1))

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        size = Path(spec.source).stat().st_size if Path(spec.source).exists() else 0
        n_ctx = int(spec.options.get("n_ctx", 4096))
        slots = self.slot_count(spec)
        kv = n_ctx * 64 * 1024 * slots
        # On the CPU and Apple's unified memory the slots share one memory-mapped copy of
        # the weights; on a discrete GPU each context uploads its own.
        copies = slots if spec.device.kind in (DeviceKind.CUDA, DeviceKind.ROCM) else 1
        return int(size * 1.2) * copies + kv

    def load(self, spec: ModelSpec) -> None:
        self.model_name = spec.name
        from llama_cpp import Llama, llama_chat_format

        path = Path(spec.source)
        if not path.is_file():
            raise EngineError(
                f"GGUF file not found: {spec.source}", status=503, code="model_missing"
            )
        n_gpu_layers = -1 if spec.device.kind in (DeviceKind.CUDA, DeviceKind.METAL) else 0
        self.slots = self.slot_count(spec)
        self._all = [
            Llama(
                model_path=str(path),
                n_ctx=int(spec.options.get("n_ctx", 4096)),
                n_threads=int(spec.options.get("n_threads") or default_threads()),
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
            for _ in range(self.slots)
        ]
        for ctx in self._all:
            self.contexts.put(ctx)
        self.llm = self._all[0]  # tokenising and metadata: read-only, shared
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineError(
                f"{path.name} carries no chat template", status=500, code="model_unsupported"
            )
        model = self.llm._model
        eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
        self.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )
        self.family = detect(template)
        self._warm_up()

    def _warm_up(self) -> None:
        """Run one token through the model, so the first request does not pay for
        paging the weights in and starting the threads."""
        tokens = self.prompt_tokens([{"role": "user", "content": "Hi"}])
        for ctx in self._all:
            gen = ctx.generate(tokens, temp=0.0)
            try:
                next(gen)
            finally:
                gen.close()

    def unload(self) -> None:
        for ctx in self._all:
            ctx.close()
        self._all = []
        self.llm = None

    def _is_end(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token)) or (
            token == self.llm.token_eos()
        )

    def prompt_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        try:
            rendered = self.formatter(messages=messages, tools=tools)
        except Exception as exc:  # the template refused the conversation
            raise EngineError(
                f"the model's chat template rejected the messages: {exc}",
                status=400,
                code="invalid_messages",
                param="messages",
            ) from exc
        tokens: list[int] = self.llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return tokens

    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        messages = list(request.get("messages") or [])
        tools = tool_request(request)
        if tools.tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            return self._chat_tools(messages, tools, request, cancelled)
        tokens = self.prompt_tokens(messages)
        return self._generate(tokens, request, cancelled, what="messages")

    def _chat_tools(
        self,
        messages: list[dict[str, Any]],
        tools: ToolRequest,
        request: dict[str, Any],
        cancelled: Cancelled,
    ) -> Iterator[dict[str, Any]]:
        """A conversation with tools (docs/tools.md): rendered for the template's family
        (hives/agent/engines/toolformats.py), calls sampled under the family's grammar."""
        family = self.family
        rendered, template_tools = render_messages(family, messages, tools)
        tokens = self.prompt_tokens(rendered, template_tools)
        budget = token_budget(
            self.llm.n_ctx(), len(tokens), request.get("max_tokens"), param="messages"
        )
        if not tools.active:
            return self._tokens(tokens, request, cancelled, budget)
        if request.get("response_format"):
            raise EngineError(
                "'response_format' cannot be combined with tools on this model",
                status=400,
                code="unsupported_parameter",
                param="response_format",
            )
        gbnf = family.grammar(tools.allowed(), tools.parallel)
        self._compile(gbnf)  # here: a schema the grammar cannot hold is the caller's 400
        return self._tool_stream(tokens, request, cancelled, budget, family, tools, gbnf)

    def _compile(self, gbnf: str) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        return self._checked(LlamaGrammar.from_string(gbnf, verbose=False), param="tools")

    def _checked(self, grammar: Any, *, param: str) -> Any:
        """`grammar` once llama.cpp itself has parsed it. llama-cpp-python parses a grammar
        only when it samples, and a grammar llama.cpp refuses there (a rule that refers to
        itself first, as a `$ref` loop in a JSON Schema becomes) is a null sampler that
        crashes the worker: so it is tried here, and refused as the caller's 400."""
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(
            self.llm._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not sampler:
            raise EngineError(
                "This JSON schema cannot be enforced: llama.cpp refuses the grammar it becomes "
                "(a $ref that refers back to itself, or a rule it cannot parse).",
                status=400,
                code="unsupported_schema",
                param=param,
            )
        llama_cpp.llama_sampler_free(sampler)
        return grammar

    def complete(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        """Legacy completions: the prompt as it is, no chat template."""
        prompt = str(request.get("prompt") or "")
        tokens: list[int] = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        return self._generate(tokens, request, cancelled, what="prompt")

    def _generate(
        self, tokens: list[int], request: dict[str, Any], cancelled: Cancelled, *, what: str
    ) -> Iterator[dict[str, Any]]:
        budget = token_budget(self.llm.n_ctx(), len(tokens), request.get("max_tokens"), param=what)
        return self._tokens(tokens, request, cancelled, budget)

    def _tokens(
        self, tokens: list[int], request: dict[str, Any], cancelled: Cancelled, max_tokens: int
    ) -> Iterator[dict[str, Any]]:
        llm = self.contexts.get()  # a free slot (the worker runs at most `slots` jobs)
        try:
            yield from self._sample(llm, tokens, request, cancelled, max_tokens)
        finally:
            self.contexts.put(llm)

    def _run(
        self,
        llm: Any,
        tokens: list[int],
        request: dict[str, Any],
        grammar: Any,
        *,
        special: bool = False,
    ) -> Generator[tuple[bytes, dict[str, Any] | None], None, None]:
        """The model's next tokens, each as its bytes and (when the request asked for
        them) its log-probability entry, until an end-of-generation token."""
        seed = request.get("seed")
        llm.set_seed(int(seed) % 2**32 if seed is not None else random.getrandbits(32))
        temperature = request.get("temperature")
        top_p = request.get("top_p")
        top_k = request.get("top_k")
        top = int(request.get("top_logprobs") or 0) if request.get("logprobs") else None
        gen = llm.generate(
            tokens,
            temp=DEFAULT_TEMPERATURE if temperature is None else float(temperature),
            top_p=DEFAULT_TOP_P if top_p is None else float(top_p),
            top_k=DEFAULT_TOP_K if top_k is None else int(top_k),
            presence_penalty=float(request.get("presence_penalty") or 0.0),
            frequency_penalty=float(request.get("frequency_penalty") or 0.0),
            reset=True,
            grammar=grammar,
        )
        try:
            for token in gen:
                if self._is_end(token):
                    return
                piece: bytes = llm.detokenize([token], special=special)
                yield piece, (None if top is None else self._logprob(llm, token, piece, top))
        finally:
            gen.close()

    def _logprob(self, llm: Any, token: int, piece: bytes, top: int) -> dict[str, Any]:
        """OpenAI's entry for one sampled token: its log probability under the model (before
        temperature and the other samplers), and the `top` most likely tokens'."""
        import llama_cpp
        import numpy as np

        n_vocab = llm.n_vocab()
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,)
        )
        logprobs = llama_cpp.Llama.logits_to_logprobs(logits)

        def entry(tok: int, raw: bytes) -> dict[str, Any]:
            text = raw.decode("utf-8", errors="replace")
            return {"token": text, "logprob": float(logprobs[tok]), "bytes": list(raw)}

        out = entry(token, piece)
        best: list[int] = [int(t) for t in np.argpartition(-logprobs, top)[:top]] if top else []
        out["top_logprobs"] = [
            entry(t, llm.detokenize([t])) for t in sorted(best, key=lambda t: -float(logprobs[t]))
        ]
        return out

    def _sample(
        self,
        llm: Any,
        tokens: list[int],
        request: dict[str, Any],
        cancelled: Cancelled,
        max_tokens: int,
    ) -> Iterator[dict[str, Any]]:
        if max_tokens <= 0:  # completions allow max_tokens 0: nothing to generate
            yield {
                "kind": EventKind.DONE,
                "finish_reason": "length",
                "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0},
            }
            return
        stops = [s for s in (request.get("stop") or []) if s]
        grammar = _grammar(request.get("response_format"))
        if grammar is not None:
            grammar = self._checked(grammar, param="response_format.json_schema.schema")

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""  # decoded text not yet sent (may be the start of a stop sequence)
        entries: list[dict[str, Any]] = []  # log probabilities of the tokens not yet sent
        generated = 0
        matched = ""  # the stop sequence that ended it (Anthropic's stop_sequence)
        finish = "stop"  # the model's end-of-generation token, unless a break says otherwise
        with contextlib.closing(self._run(llm, tokens, request, grammar)) as run:
            for piece, entry in run:
                if cancelled():
                    finish = "cancelled"
                    break
                generated += 1
                if entry is not None:
                    entries.append(entry)
                pending += decoder.decode(piece)
                if stops:
                    found = [(i, s) for s in stops if (i := pending.find(s)) >= 0]
                    if found:
                        hit, matched = min(found)
                        pending = pending[:hit]
                        finish = "stop"
                        break
                    keep = held_back(pending, stops)
                    out, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                else:
                    out, pending = pending, ""
                if out:
                    # Running counts: a stream cut short is still metered exactly.
                    yield delta(out, entries, len(tokens), generated)
                    entries = []
                if generated >= max_tokens:
                    finish = "length"
                    break
        pending += decoder.decode(b"", final=True)
        if pending and finish != "cancelled":
            yield delta(pending, entries, len(tokens), generated)
        done: dict[str, Any] = {
            "kind": EventKind.DONE,
            "finish_reason": finish,
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": generated},
        }
        if matched:
            done["stop_sequence"] = matched
        yield done

    def _tool_stream(
        self,
        tokens: list[int],
        request: dict[str, Any],
        cancelled: Cancelled,
        budget: int,
        family: Family,
        tools: ToolRequest,
        grammar: str,
    ) -> Iterator[dict[str, Any]]:
        llm = self.contexts.get()
        try:

            def source(
                prompt: list[int], gbnf: str | None, logprobs: bool
            ) -> Generator[tuple[str, list[dict[str, Any]], int], None, None]:
                compiled = self._compile(gbnf) if gbnf is not None else None
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                asked = {**request, "logprobs": logprobs}
                special = family.name == "mistral"  # its trigger is a special token
                with contextlib.closing(
                    self._run(llm, prompt, asked, compiled, special=special)
                ) as run:
                    for piece, entry in run:
                        yield decoder.decode(piece), [entry] if entry else [], 1

            def tokenize(text: str) -> list[int]:
                out: list[int] = self.llm.tokenize(text.encode("utf-8"), add_bos=False)
                return out

            answer = ToolAnswer(source, tokenize, family, tools, self.model_name)
            yield from answer.events(tokens, request, cancelled, budget, grammar)
        finally:
            self.contexts.put(llm)


def _grammar(response_format: Any) -> Any:
    """A llama.cpp grammar that constrains sampling to JSON, or to a JSON schema."""
    if not isinstance(response_format, dict):
        return None
    import json

    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if response_format.get("type") == "json_object":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    if response_format.get("type") == "json_schema":
        try:
            return LlamaGrammar.from_json_schema(
                json.dumps(response_format.get("schema")), verbose=False
            )
        except Exception as exc:  # a schema the converter cannot express
            raise EngineError(
                f"This JSON schema cannot be enforced: {exc}",
                status=400,
                code="unsupported_schema",
                param="response_format.json_schema.schema",
            ) from exc
    return None
