"""vLLM: batched text generation on NVIDIA (and ROCm) GPUs.

vLLM earns its keep by batching: many sequences decode together in one forward
pass (continuous batching, paged KV cache). So this engine has `slots` > 1 and the
worker calls chat()/complete() from several threads at once. vLLM's engine is
asyncio-native (AsyncLLM, exported as vllm.AsyncLLMEngine): one event loop runs in
a background thread and owns it; each request is submitted to that loop with
run_coroutine_threadsafe and its async stream of outputs is bridged back to the
calling thread through a queue, as a plain blocking iterator.

Prompts are tokenised here (the model's chat template, via transformers, which vLLM
depends on) and handed to vLLM as token ids, so usage.prompt_tokens is exact and a
prompt longer than the context is refused before it reaches the scheduler.
Stop strings are applied by vLLM, which holds back text that may still become a
stop string and never returns the stop string itself.

vLLM is imported only inside load(): `pip install 'rbee[cuda]'` brings it (and its
own torch build) on a CUDA machine; elsewhere load() fails with 503 engine_missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any

from hives.agent.engines.base import Cancelled, Engine, EngineError, hub_ref, token_budget
from hives.agent.engines.llamacpp import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from hives.agent.engines.tooldriver import ToolAnswer
from hives.agent.engines.toolformats import detect, render_messages
from hives.agent.engines.tools import ToolRequest, tool_request
from hives.agent.engines.torchutil import dir_size
from hives.protocol import Capability, EventKind
from hives.spec import Device, DeviceKind, ModelSpec

logger = logging.getLogger("hives.engine.vllm")

DEFAULT_MAX_NUM_SEQS = 16
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
DEFAULT_COMPLETION_MAX_TOKENS = 16
CANCEL_POLL_S = 0.05  # how often a waiting request looks at cancelled()

_END = object()  # the bridge queue's end-of-stream marker


def engine_missing() -> EngineError:
    return EngineError(
        "vLLM is not installed on this hive: run pip install 'rbee[cuda]' on a machine "
        "with an NVIDIA GPU (vLLM needs CUDA), or serve this model with the "
        "'transformers' or 'llama.cpp' engine",
        status=503,
        code="engine_missing",
    )


def sampling_kwargs(
    request: dict[str, Any],
    *,
    max_tokens: int,
    structured_cls: Callable[..., Any] | None = None,
    grammar: str | None = None,
) -> dict[str, Any]:
    """The SamplingParams keyword arguments for one rbee text request.

    Pure (no vLLM needed): the request dict as the queen sends it, the token budget
    already fitted to the context. `structured_cls` is vLLM's StructuredOutputsParams
    (or the older GuidedDecodingParams) when the request asks for JSON; without one
    such a request is refused with 400 unsupported_parameter.
    """
    temperature = request.get("temperature")
    top_p = request.get("top_p")
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": int(max_tokens),
        "temperature": DEFAULT_TEMPERATURE if temperature is None else float(temperature),
        "top_p": DEFAULT_TOP_P if top_p is None else float(top_p),
        "presence_penalty": float(request.get("presence_penalty") or 0.0),
        "frequency_penalty": float(request.get("frequency_penalty") or 0.0),
        "stop": [s for s in (request.get("stop") or []) if s],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
    }
    seed = request.get("seed")
    if seed is not None:
        kwargs["seed"] = int(seed) % 2**63
    if request.get("logprobs"):  # vLLM returns the sampled token's and the top N's
        kwargs["logprobs"] = int(request.get("top_logprobs") or 0)
    if request.get("top_k") is not None:  # Anthropic's top_k (/v1/messages)
        kwargs["top_k"] = int(request["top_k"])
    constraint = (
        {"grammar": grammar}
        if grammar is not None
        else structured_kwargs(request.get("response_format"))
    )
    if constraint is not None:
        if structured_cls is None:
            param = "tools" if grammar is not None else "response_format"
            raise EngineError(
                "this vLLM build cannot constrain its output (no structured outputs)",
                status=400,
                code="unsupported_parameter",
                param=param,
            )
        kwargs["_structured"] = structured_cls(**constraint)
    return kwargs


def logprob_entries(
    token_ids: list[int], logprobs: Any, top: int, decode: Callable[[int], str]
) -> list[dict[str, Any]]:
    """OpenAI's chat-shaped entries from vLLM's per-token logprobs (one dict per new token:
    token id -> Logprob(logprob, rank, decoded_token)); `decode` names a token vLLM left
    undecoded."""
    out: list[dict[str, Any]] = []
    for tid, table in zip(token_ids, logprobs or [], strict=False):

        def entry(t: int, lp: Any) -> dict[str, Any]:
            text = lp.decoded_token if lp.decoded_token is not None else decode(t)
            return {
                "token": text,
                "logprob": max(float(lp.logprob), -9999.0),
                "bytes": list(text.encode("utf-8")),
            }

        chosen = table.get(tid)
        if chosen is None:
            continue
        ranked = sorted(
            ((t, lp) for t, lp in table.items() if lp.rank is not None and lp.rank <= top),
            key=lambda item: item[1].rank,
        )
        out.append({**entry(tid, chosen), "top_logprobs": [entry(t, lp) for t, lp in ranked]})
    return out


def structured_kwargs(response_format: Any) -> dict[str, Any] | None:
    """The structured-output constraint for a response_format ({"type": "json_object"}
    or {"type": "json_schema", "schema": {...}} as the queen sends them), or None."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        return {"json": response_format.get("schema") or {}}
    return None


def make_sampling_params(
    request: dict[str, Any],
    *,
    max_tokens: int,
    sampling_cls: Callable[..., Any],
    structured_cls: Callable[..., Any] | None = None,
    structured_field: str = "structured_outputs",
    output_kind: Any = None,
    grammar: str | None = None,
) -> Any:
    """A SamplingParams (`sampling_cls`) for the request. `structured_field` is the
    SamplingParams field the constraint goes in: "structured_outputs" in vLLM >= 0.11,
    "guided_decoding" before. `output_kind` is RequestOutputKind.DELTA, so each output
    carries only the new text and token ids."""
    kwargs = sampling_kwargs(
        request, max_tokens=max_tokens, structured_cls=structured_cls, grammar=grammar
    )
    constraint = kwargs.pop("_structured", None)
    if constraint is not None:
        kwargs[structured_field] = constraint
    if output_kind is not None:
        kwargs["output_kind"] = output_kind
    return sampling_cls(**kwargs)


def _structured_api(vllm_sampling: Any) -> tuple[Any, str]:
    """(constraint class, SamplingParams field) of the installed vLLM."""
    cls = getattr(vllm_sampling, "StructuredOutputsParams", None)
    if cls is not None:
        return cls, "structured_outputs"
    return getattr(vllm_sampling, "GuidedDecodingParams", None), "guided_decoding"


def visible_device_env(spec_device: str) -> dict[str, str]:
    """vLLM uses every GPU it can see, from index 0: show it only this spec's GPU."""
    device = Device(spec_device)
    index = str(device.number)
    if device.kind is DeviceKind.CUDA:
        return {"CUDA_VISIBLE_DEVICES": index}
    if device.kind is DeviceKind.ROCM:
        return {"HIP_VISIBLE_DEVICES": index, "CUDA_VISIBLE_DEVICES": index}
    return {}


class VLLMEngine(Engine):
    name = "vllm"
    capabilities = (Capability.TEXT_GEN,)
    slots = DEFAULT_MAX_NUM_SEQS

    def __init__(self) -> None:
        self.llm: Any = None
        self.tokenizer: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.n_ctx = 0
        self._params: Callable[..., Any] | None = None

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        """vLLM takes gpu_memory_utilization of the whole GPU up front (weights, then KV
        cache in all that is left), whatever the model's size."""
        fraction = float(spec.options.get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION))
        total = _gpu_total_bytes(spec.device)
        if total:
            return int(total * fraction)
        return int(dir_size(spec.source) * 1.2) + 2 * 1024**3

    def load(self, spec: ModelSpec) -> None:
        self.model_name = spec.name
        try:
            import vllm
            from vllm import sampling_params as vllm_sampling
        except ImportError as exc:
            raise engine_missing() from exc

        self.slots = int(spec.options.get("max_num_seqs", DEFAULT_MAX_NUM_SEQS))
        for key, value in visible_device_env(spec.device).items():
            os.environ.setdefault(key, value)
        source, tokenizer_source = spec.source, spec.options.get("tokenizer")
        # org/name@rev (or options.revision): weights and tokenizer of that revision.
        source, revision = hub_ref(source, spec.options)
        if source.endswith(".gguf") and not tokenizer_source:
            raise EngineError(
                "vLLM needs options.tokenizer (a repo id or directory) for a GGUF file",
                status=500,
                code="bad_options",
            )
        args = vllm.AsyncEngineArgs(
            model=source,
            revision=revision,
            tokenizer=tokenizer_source,
            tokenizer_revision=None if tokenizer_source else revision,
            dtype=str(spec.options.get("dtype", "auto")),
            max_model_len=spec.options.get("max_model_len") or spec.options.get("n_ctx"),
            max_num_seqs=self.slots,
            gpu_memory_utilization=float(
                spec.options.get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION)
            ),
            tensor_parallel_size=int(spec.options.get("tensor_parallel_size", 1)),
            enforce_eager=bool(spec.options.get("enforce_eager", False)),
            trust_remote_code=bool(spec.options.get("trust_remote_code", False)),
            quantization=spec.options.get("quantization"),
            disable_log_stats=not spec.options.get("log_stats", False),
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._run_loop, name="vllm-loop", args=(self.loop,), daemon=True
        )
        self.thread.start()

        async def start() -> Any:  # built inside the loop that will drive it
            return vllm.AsyncLLMEngine.from_engine_args(args)

        try:
            self.llm = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        except Exception as exc:
            self._stop_loop()
            raise EngineError(
                f"vLLM could not load {source!r}: {type(exc).__name__}: {exc}",
                status=503,
                code="model_missing" if isinstance(exc, OSError) else "engine_error",
            ) from exc

        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_source or source,
            trust_remote_code=bool(spec.options.get("trust_remote_code", False)),
            **({"revision": revision} if revision and not tokenizer_source else {}),
        )
        if spec.options.get("chat_template"):
            self.tokenizer.chat_template = spec.options["chat_template"]
        model_config = getattr(self.llm, "model_config", None)
        self.n_ctx = int(getattr(model_config, "max_model_len", 0) or 0) or int(
            spec.options.get("max_model_len") or 4096
        )
        structured_cls, field = _structured_api(vllm_sampling)
        output_kind = vllm_sampling.RequestOutputKind.DELTA

        def params(request: dict[str, Any], max_tokens: int, grammar: str | None = None) -> Any:
            return make_sampling_params(
                request,
                max_tokens=max_tokens,
                sampling_cls=vllm_sampling.SamplingParams,
                structured_cls=structured_cls,
                structured_field=field,
                output_kind=output_kind,
                grammar=grammar,
            )

        self._params = params
        self.family = detect(getattr(self.tokenizer, "chat_template", None))

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _stop_loop(self) -> None:
        loop, thread = self.loop, self.thread
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if loop is not None and not loop.is_running():
            loop.close()
        self.loop = self.thread = None

    def unload(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.shutdown()
            except Exception:
                logger.exception("vLLM did not shut down cleanly")
        self._stop_loop()
        self.tokenizer = None

    # -- prompts ---------------------------------------------------------------------

    def chat_prompt_tokens(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=True,
                **({"tools": tools} if tools else {}),
            )
        except Exception as exc:
            raise EngineError(
                f"the model's chat template rejected the messages: {exc}",
                status=400,
                code="invalid_messages",
                param="messages",
            ) from exc
        ids: list[int] = self.tokenizer(str(text), add_special_tokens=False)["input_ids"]
        return ids

    # -- tasks -----------------------------------------------------------------------

    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        messages = list(request.get("messages") or [])
        tools = tool_request(request)
        if tools.tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            return self._chat_tools(messages, tools, request, cancelled)
        tokens = self.chat_prompt_tokens(messages)
        return self._submit(tokens, request, cancelled, param="messages", default_max=None)

    def _chat_tools(
        self,
        messages: list[dict[str, Any]],
        tools: ToolRequest,
        request: dict[str, Any],
        cancelled: Cancelled,
    ) -> Iterator[dict[str, Any]]:
        """Tools as on llama.cpp (hives/agent/engines/tooldriver.py): the template's own
        family (or the generic one), calls under vLLM's structured outputs with the
        family's grammar (xgrammar reads GBNF)."""
        rendered, template_tools = render_messages(self.family, messages, tools)
        tokens = self.chat_prompt_tokens(rendered, template_tools)
        if not tools.active:
            return self._submit(tokens, request, cancelled, param="messages", default_max=None)
        if request.get("response_format"):
            raise EngineError(
                "'response_format' cannot be combined with tools on this model",
                status=400,
                code="unsupported_parameter",
                param="response_format",
            )
        budget = token_budget(self.n_ctx, len(tokens), request.get("max_tokens"), param="messages")
        gbnf = self.family.grammar(tools.allowed(), tools.parallel)
        assert self._params is not None, "load() first"
        self._params(request, 1, gbnf)  # no structured outputs: the caller's 400, now

        def source(
            prompt: list[int], grammar: str | None, logprobs: bool
        ) -> Generator[tuple[str, list[dict[str, Any]], int], None, None]:
            assert self._params is not None
            asked = {**request, "logprobs": logprobs}
            params = self._params(asked, max(1, budget), grammar)
            params.skip_special_tokens = False  # a trigger may be a special token
            top = self._top(asked)
            with contextlib.closing(self._outputs(prompt, params, cancelled)) as outputs:
                for out in outputs:
                    ids = list(out.token_ids)
                    entries = (
                        logprob_entries(ids, out.logprobs, top, self._decode) if logprobs else []
                    )
                    yield out.text, entries, len(ids)

        def tokenize(text: str) -> list[int]:
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids

        answer = ToolAnswer(source, tokenize, self.family, tools, self.model_name)
        return answer.events(tokens, request, cancelled, budget, gbnf)

    @staticmethod
    def _top(request: dict[str, Any]) -> int:
        return int(request.get("top_logprobs") or 0)

    def _decode(self, token: int) -> str:
        return str(self.tokenizer.decode([token]))

    def complete(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        prompt = str(request.get("prompt") or "")
        tokens: list[int] = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not tokens:
            raise EngineError("the prompt is empty", status=400, param="prompt")
        events = self._submit(
            tokens, request, cancelled, param="prompt", default_max=DEFAULT_COMPLETION_MAX_TOKENS
        )
        return events  # `echo` is the queen's: it prepends the prompt itself

    def _submit(
        self,
        tokens: list[int],
        request: dict[str, Any],
        cancelled: Cancelled,
        *,
        param: str,
        default_max: int | None,
    ) -> Iterator[dict[str, Any]]:
        max_tokens = token_budget(
            self.n_ctx, len(tokens), request.get("max_tokens"), param=param, default=default_max
        )
        assert self._params is not None, "load() first"
        if max_tokens == 0:  # vLLM wants at least one: nothing to generate, nothing queued
            return iter(
                [
                    {
                        "kind": EventKind.DONE,
                        "finish_reason": "length",
                        "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0},
                    }
                ]
            )
        params = self._params(request, max_tokens)  # raises 400s before anything is queued
        return self._stream(tokens, params, cancelled, request)

    def _stream(
        self, tokens: list[int], params: Any, cancelled: Cancelled, request: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        generated = 0
        finish: str | None = None
        top = self._top(request) if request.get("logprobs") else None
        for out in self._outputs(tokens, params, cancelled):
            generated += len(out.token_ids)
            if out.text:
                event: dict[str, Any] = {"kind": EventKind.DELTA, "text": out.text}
                if top is not None:
                    event["logprobs"] = logprob_entries(
                        list(out.token_ids), out.logprobs, top, self._decode
                    )
                yield event
            if out.finish_reason is not None:
                finish = "length" if out.finish_reason == "length" else "stop"
        if cancelled():
            finish = "cancelled"
        yield {
            "kind": EventKind.DONE,
            "finish_reason": finish or "stop",
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": generated},
        }

    def _outputs(
        self, tokens: list[int], params: Any, cancelled: Cancelled
    ) -> Generator[Any, None, None]:
        """One request's outputs (DELTA: each carries only the new text and tokens), until
        it finishes, is cancelled, or the caller stops iterating (then it is aborted)."""
        loop = self.loop
        assert loop is not None and self.llm is not None, "load() first"
        request_id = uuid.uuid4().hex
        bridge: queue.Queue[Any] = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(
            _pump(self.llm.generate({"prompt_token_ids": tokens}, params, request_id), bridge),
            loop,
        )
        try:
            while not cancelled():
                try:
                    item = bridge.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise EngineError(
                        f"vLLM failed: {type(item).__name__}: {item}", status=500
                    ) from item
                yield item.outputs[0]
        finally:
            if not future.done():  # cancelled, or the consumer went away: free the slot
                future.cancel()
                asyncio.run_coroutine_threadsafe(self.llm.abort(request_id), loop)


async def _pump(stream: AsyncIterator[Any], bridge: queue.Queue[Any]) -> None:
    """Runs in the vLLM loop: copy one request's outputs into its thread's queue."""
    try:
        async for output in stream:
            bridge.put(output)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # reported to the waiting thread, not lost in the loop
        bridge.put(exc)
    finally:
        bridge.put(_END)


def _gpu_total_bytes(spec_device: str) -> int:
    """Total memory of the spec's GPU through NVML (no CUDA context is created)."""
    device = Device(spec_device)
    if device.kind is not DeviceKind.CUDA:
        return 0
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.number)
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


__all__ = [
    "VLLMEngine",
    "engine_missing",
    "logprob_entries",
    "make_sampling_params",
    "sampling_kwargs",
    "structured_kwargs",
    "visible_device_env",
]
