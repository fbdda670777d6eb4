"""Hugging Face transformers: the fallback text engine (CPU, CUDA, ROCm, Apple MPS).

Slower than llama.cpp on a CPU and than vLLM on a GPU, but it runs any causal LM
transformers knows, on any device torch has, from a local directory, a Hub repo
id or a GGUF file (dequantised on load: `gguf_file=`).

Generation is a hand-written loop over the model's forward pass with its KV cache
rather than `generate()`, for the same reasons as the llama.cpp engine: usage counts
are exact (the prompt's tokens and each sampled token), stop sequences never leak a
partial match into the stream (the text that could still become one is held back),
and cancellation is checked between two tokens. Sampling runs on the CPU with a
seeded torch.Generator, so one seed gives the same text on every device.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import random
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError, hub_ref, token_budget
from hives.agent.engines.llamacpp import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from hives.agent.engines.tooldriver import ToolAnswer
from hives.agent.engines.toolformats import detect, held_back, render_messages
from hives.agent.engines.tools import ToolRequest, tool_request
from hives.agent.engines.torchutil import (
    dtype_bytes,
    free_device_memory,
    torch_device,
    torch_dtype,
    weights_bytes,
)
from hives.protocol import Capability, EventKind
from hives.spec import ModelSpec

logger = logging.getLogger("hives.engine.transformers")

DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
DETOKENIZE_CONTEXT = 6  # prompt tokens decoded with the first new ones, for correct spacing


def refuse_response_format(response_format: Any) -> None:
    """This engine samples freely: it cannot promise JSON, so it says so up front."""
    if response_format is None or response_format == "text":
        return
    if isinstance(response_format, dict) and response_format.get("type") in (None, "text"):
        return
    raise EngineError(
        "This model's engine (transformers) cannot constrain its output to JSON; "
        "leave out response_format or use a model served by llama.cpp or vLLM.",
        status=400,
        code="unsupported_parameter",
        param="response_format",
    )


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    Decoding token by token breaks words (SentencePiece's leading spaces) and
    multi-byte characters split across tokens; decoding everything every step is
    quadratic. This decodes a short sliding window instead and releases text only
    once it no longer ends in an incomplete character (U+FFFD).
    """

    def __init__(self, tokenizer: Any, context: list[int]) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = list(context)
        self.prefix = 0
        self.read = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """What is still held at the end (an incomplete character, as U+FFFD)."""
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :] if len(after) > len(before) else ""


def sample_next(
    logits: Any,
    *,
    temperature: float,
    top_p: float,
    generator: Any,
    counts: dict[int, int],
    frequency_penalty: float,
    presence_penalty: float,
    top_k: int = 0,
) -> int:
    """One token from the last position's logits (a 1-D float32 CPU tensor).

    OpenAI's penalties: every token already generated loses
    frequency_penalty x its count + presence_penalty. Temperature 0 is greedy.
    top_k > 0 (Anthropic's) keeps only the k most likely tokens.
    """
    import torch

    if counts and (frequency_penalty or presence_penalty):
        ids = torch.tensor(list(counts), dtype=torch.long)
        n = torch.tensor(list(counts.values()), dtype=logits.dtype)
        logits = logits.clone()
        logits[ids] -= n * frequency_penalty + presence_penalty
    if temperature <= 0:
        return int(torch.argmax(logits))
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    if 0 < top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop = cumulative - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        choice = int(torch.multinomial(sorted_probs, 1, generator=generator))
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


class TransformersEngine(Engine):
    name = "transformers"
    capabilities = (Capability.TEXT_GEN,)
    slots = 1  # one KV cache, one forward pass at a time

    def __init__(self) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = "cpu"
        self.n_ctx = 0
        self.eos_ids: set[int] = set()
        self._last_only: dict[str, int] = {}

    # -- loading ---------------------------------------------------------------------

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        path = Path(spec.source)
        size = weights_bytes(path, dtype_bytes(spec))
        if path.suffix == ".gguf":
            size *= 4  # quantised on disk (~4-5 bits), dequantised to 16/32 bits on load
        n_ctx = int(spec.options.get("n_ctx", 4096))
        return int(size * 1.2) + n_ctx * 128 * 1024  # weights + KV cache, roughly

    def load(self, spec: ModelSpec) -> None:
        self.model_name = spec.name
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # the worker's stderr is a log

        self.device = torch_device(spec.device)
        if self.device.startswith("cuda") and not spec.options.get("cudnn_sdpa", False):
            _disable_cudnn_attention()
        where, extra = spec.source, {}
        path = Path(spec.source)
        if path.suffix == ".gguf":
            if not path.is_file():
                raise EngineError(
                    f"GGUF file not found: {spec.source}", status=503, code="model_missing"
                )
            where, extra = str(path.parent), {"gguf_file": path.name}
        else:
            # org/name@rev (or options.revision): that revision, from the Hub or its cache.
            where, revision = hub_ref(spec.source, spec.options)
            if revision:
                extra = {"revision": revision}
        trust = bool(spec.options.get("trust_remote_code", False))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                spec.options.get("tokenizer") or where,
                trust_remote_code=trust,
                **({} if spec.options.get("tokenizer") else extra),
            )
            self.model = AutoModelForCausalLM.from_pretrained(
                where, dtype=torch_dtype(spec), trust_remote_code=trust, **extra
            )
        except OSError as exc:  # not local and not in the Hub cache (offline)
            raise EngineError(
                f"cannot load {spec.source!r}: {exc}", status=503, code="model_missing"
            ) from exc
        self.model.to(self.device)
        self.model.eval()
        if spec.options.get("chat_template"):
            self.tokenizer.chat_template = spec.options["chat_template"]
        self.n_ctx = int(spec.options.get("n_ctx") or _context_length(self.model, self.tokenizer))
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        # Prefill computes logits for the last position only (a 4k-token prompt times a
        # 150k vocabulary would otherwise take over a gigabyte), where the model allows.
        params = inspect.signature(self.model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._warm_up()

    def _warm_up(self) -> None:
        """A prefill and two cached decode steps, so the first request does not pay for
        lazy initialisation (on CUDA the first decode steps take seconds otherwise)."""
        for _ in self._stream(
            self.completion_prompt_tokens("Hi") or [0],
            {"temperature": 0},
            lambda: False,
            max_tokens=3,
        ):
            pass

    def unload(self) -> None:
        self.model = None
        self.tokenizer = None
        free_device_memory(self.device)

    # -- prompts ---------------------------------------------------------------------

    def chat_prompt_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineError(
                "this model has no chat template; use /v1/completions",
                status=400,
                code="model_unsupported",
                param="messages",
            )
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=True,
                **({"tools": tools} if tools else {}),
            )
        except Exception as exc:  # the template refused the conversation
            raise EngineError(
                f"the model's chat template rejected the messages: {exc}",
                status=400,
                code="invalid_messages",
                param="messages",
            ) from exc
        # The rendered template already carries BOS and friends as text.
        ids: list[int] = self.tokenizer(str(text), add_special_tokens=False)["input_ids"]
        return ids

    def completion_prompt_tokens(self, prompt: str) -> list[int]:
        ids: list[int] = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        return ids

    # -- tasks -----------------------------------------------------------------------

    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        refuse_response_format(request.get("response_format"))
        messages = list(request.get("messages") or [])
        tools = tool_request(request)
        if tools.tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            return self._chat_tools(messages, tools, request, cancelled)
        tokens = self.chat_prompt_tokens(messages)
        return self._generate(tokens, request, cancelled, param="messages", default_max=None)

    def complete(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        refuse_response_format(request.get("response_format"))
        prompt = str(request.get("prompt") or "")
        tokens = self.completion_prompt_tokens(prompt)
        if not tokens:
            raise EngineError("the prompt is empty", status=400, param="prompt")
        events = self._generate(
            tokens, request, cancelled, param="prompt", default_max=DEFAULT_COMPLETION_MAX_TOKENS
        )
        return events  # `echo` is the queen's: it prepends the prompt itself

    def _generate(
        self,
        tokens: list[int],
        request: dict[str, Any],
        cancelled: Cancelled,
        *,
        param: str,
        default_max: int | None,
    ) -> Iterator[dict[str, Any]]:
        """Checks happen here, eagerly, so a 400 is raised by chat()/complete() itself
        rather than on the first next() of the stream."""
        max_tokens = token_budget(
            self.n_ctx, len(tokens), request.get("max_tokens"), param=param, default=default_max
        )
        return self._stream(tokens, request, cancelled, max_tokens)

    def _steps(
        self, tokens: list[int], request: dict[str, Any]
    ) -> Generator[tuple[int, dict[str, Any] | None], None, None]:
        """The sampled tokens, each with its log-probability entry when the request asks
        for them (under the model, before temperature), until an end-of-turn token."""
        import torch

        temperature = request.get("temperature")
        temperature = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
        top_p = request.get("top_p")
        top_p = DEFAULT_TOP_P if top_p is None else float(top_p)
        freq = float(request.get("frequency_penalty") or 0.0)
        pres = float(request.get("presence_penalty") or 0.0)
        seed = request.get("seed")
        top = int(request.get("top_logprobs") or 0) if request.get("logprobs") else None
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(seed) % 2**63 if seed is not None else random.getrandbits(63))
        counts: dict[int, int] = {}
        past: Any = None
        step_input = torch.tensor([tokens], device=self.device)
        while True:
            # (inference_mode is entered per step, not around the loop: it is thread-local
            # state that would otherwise leak into the caller between two yields)
            with torch.inference_mode():
                out = self.model(
                    input_ids=step_input, past_key_values=past, use_cache=True, **self._last_only
                )
                past = out.past_key_values
                logits = out.logits[0, -1].float().cpu()
            token = sample_next(
                logits,
                temperature=temperature,
                top_p=top_p,
                generator=generator,
                counts=counts,
                frequency_penalty=freq,
                presence_penalty=pres,
                top_k=int(request.get("top_k") or 0),
            )
            if token in self.eos_ids:
                return
            counts[token] = counts.get(token, 0) + 1
            step_input = torch.tensor([[token]], device=self.device)
            yield token, None if top is None else self._logprob(logits, token, top)

    def _logprob(self, logits: Any, token: int, top: int) -> dict[str, Any]:
        import torch

        logprobs = torch.log_softmax(logits, dim=-1)

        def entry(t: int) -> dict[str, Any]:
            text = str(self.tokenizer.decode([t]))
            return {"token": text, "logprob": float(logprobs[t]), "bytes": list(text.encode())}

        best = torch.topk(logprobs, top).indices.tolist() if top else []
        return {**entry(token), "top_logprobs": [entry(int(t)) for t in best]}

    def _stream(
        self, tokens: list[int], request: dict[str, Any], cancelled: Cancelled, max_tokens: int
    ) -> Iterator[dict[str, Any]]:
        stops = [s for s in (request.get("stop") or []) if s]
        detok = IncrementalDetokenizer(self.tokenizer, tokens[-DETOKENIZE_CONTEXT:])
        pending = ""  # decoded text not yet sent (may be the start of a stop sequence)
        entries: list[dict[str, Any]] = []  # log probabilities of the tokens not yet sent
        generated = 0
        finish = "stop"  # an end-of-turn token, unless a break says otherwise
        hit_stop = False
        matched = ""  # the stop sequence that ended it (Anthropic's stop_sequence)
        with contextlib.closing(self._steps(tokens, request)) as steps:
            for token, entry in steps if max_tokens > 0 else ():
                if cancelled():
                    finish = "cancelled"
                    break
                generated += 1
                if entry is not None:
                    entries.append(entry)
                pending += detok.add(token)
                if stops:
                    hit = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
                    if hit >= 0:
                        pending = pending[:hit]
                        finish, hit_stop = "stop", True
                        break
                    keep = held_back(pending, stops)
                    text, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                else:
                    text, pending = pending, ""
                if text:
                    yield _text_delta(text, entries)
                    entries = []
                if generated >= max_tokens:
                    finish = "length"
                    break
        if max_tokens <= 0:
            finish = "length"
        if finish != "cancelled":
            if not hit_stop:  # whatever follows a stop sequence is dropped with it
                pending += detok.flush()
            if pending:  # the held-back tail that never became a stop sequence
                yield _text_delta(pending, entries)
        done: dict[str, Any] = {
            "kind": EventKind.DONE,
            "finish_reason": finish,
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": generated},
        }
        if matched:
            done["stop_sequence"] = matched
        yield done

    def _chat_tools(
        self,
        messages: list[dict[str, Any]],
        tools: ToolRequest,
        request: dict[str, Any],
        cancelled: Cancelled,
    ) -> Iterator[dict[str, Any]]:
        """Tools through the shared driver (hives/agent/engines/tooldriver.py). transformers
        has no grammar sampler, so a call is constrained only as far as a forced prefix
        goes (the family's opening and, for a named function, its name); its arguments
        are checked when it is complete, and an invalid call is an error, never a result."""
        family = detect(getattr(self.tokenizer, "chat_template", None))
        rendered, template_tools = render_messages(family, messages, tools)
        tokens = self.chat_prompt_tokens(rendered, template_tools)
        budget = token_budget(self.n_ctx, len(tokens), request.get("max_tokens"), param="messages")
        if not tools.active:
            return self._stream(tokens, request, cancelled, budget)

        def source(
            prompt: list[int], grammar: str | None, logprobs: bool
        ) -> Generator[tuple[str, list[dict[str, Any]], int], None, None]:
            head = family.forced_prefix(tools.named) if grammar is not None else ""
            if head:
                yield head, [], 0
                prompt = prompt + tokenize(head)
            detok = IncrementalDetokenizer(self.tokenizer, prompt[-DETOKENIZE_CONTEXT:])
            with contextlib.closing(
                self._steps(prompt, {**request, "logprobs": logprobs})
            ) as steps:
                for token, entry in steps:
                    yield detok.add(token), [entry] if entry else [], 1

        def tokenize(text: str) -> list[int]:
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids

        answer = ToolAnswer(source, tokenize, family, tools, self.model_name)
        return answer.events(tokens, request, cancelled, budget, "")


def _text_delta(text: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    event: dict[str, Any] = {"kind": EventKind.DELTA, "text": text}
    if entries:
        event["logprobs"] = list(entries)
    return event


def _disable_cudnn_attention() -> None:
    """Keep torch's SDPA off its cuDNN backend (process-wide; a worker holds one model).

    On an H100 with torch 2.11, cuDNN attention builds a new execution plan for every
    new key/value length, 40-60 ms each: decoding token by token, every position
    the first request reaches costs that once (a 40-token answer took 2.5 s instead
    of 0.1 s). The flash and memory-efficient backends have no such warm-up.
    spec.options["cudnn_sdpa"] = true keeps cuDNN on.
    """
    import torch

    enable = getattr(torch.backends.cuda, "enable_cudnn_sdp", None)
    if enable is not None:
        enable(False)


def _context_length(model: Any, tokenizer: Any) -> int:
    config = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return int(limit) if isinstance(limit, int) and 0 < limit < 10**7 else 2048


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends a turn: the generation config's (often several, e.g.
    Llama 3's <|eot_id|>), the model config's and the tokenizer's."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (
        getattr(gen, "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids
