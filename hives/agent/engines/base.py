"""The engine interface every worker runs."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class EngineError(Exception):
    """A failure the client should see: carries an HTTP status and an OpenAI error code."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 500,
        code: str = "engine_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: the public id, the engine, where the weights are, on which device."""

    name: str
    engine: str
    source: str
    capability: str = "text-gen"
    device: str = "cpu"
    pinned: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "source": self.source,
            "capability": self.capability,
            "device": self.device,
            "pinned": self.pinned,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(
            name=str(d["name"]),
            engine=str(d["engine"]),
            source=str(d.get("source", "")),
            capability=str(d.get("capability", "text-gen")),
            device=str(d.get("device", "cpu")),
            pinned=bool(d.get("pinned", False)),
            options=dict(d.get("options") or {}),
        )


Cancelled = Callable[[], bool]

# The tasks a worker runs (the job's `task`), and the capability that serves each.
from hives.protocol import (  # noqa: E402  (re-exported for engines)
    TASK_CAPABILITY,
    TASK_CHAT,
    TASK_COMPLETION,
    TASK_EMBEDDING,
    TASK_IMAGE,
    TASK_IMAGE_VARIATION,
    TASK_SPEECH,
    TASK_TRANSCRIPTION,
    TASK_TRANSLATION,
)

__all__ = [
    "TASK_CAPABILITY",
    "TASK_CHAT",
    "TASK_COMPLETION",
    "TASK_EMBEDDING",
    "TASK_IMAGE",
    "TASK_IMAGE_VARIATION",
    "TASK_SPEECH",
    "TASK_TRANSCRIPTION",
    "TASK_TRANSLATION",
    "Cancelled",
    "Engine",
    "EngineError",
    "ModelSpec",
    "token_budget",
    "wrong_task",
]


def token_budget(
    n_ctx: int, prompt_tokens: int, asked: Any, *, param: str, default: int | None = None
) -> int:
    """How many tokens a text engine may generate: what was asked (or `default`), at most
    the room left in the context; a prompt that fills the context is the caller's 400.
    0 is a valid answer (legacy completions allow max_tokens 0)."""
    room = n_ctx - prompt_tokens
    if room <= 0:
        raise EngineError(
            f"This model's maximum context length is {n_ctx} tokens. However, your {param} "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the {param}.",
            status=400,
            code="context_length_exceeded",
            param=param,
        )
    if asked is None:
        asked = default
    return room if asked is None else max(0, min(int(asked), room))


def wrong_task(engine: str, task: str) -> EngineError:
    return EngineError(
        f"engine {engine!r} does not serve {task!r} requests",
        status=400,
        code="wrong_model_type",
    )


class Engine(abc.ABC):
    """One model in one process: load() once, run(task, request) per job, unload().

    run() yields events, the last of which is exactly one
    ``{"kind": "done", ...}``; it raises EngineError for a request the model cannot
    serve (status 400 for the caller's mistakes: bad audio, a size not offered, ...).
    The request dicts are already validated by the queen (inference/schemas.py).

    Streaming text (chat, completion):
        {"kind": "delta", "text"} ... then
        {"kind": "done", "finish_reason", "usage": {"prompt_tokens", "completion_tokens"}}
    Streaming audio (speech): {"kind": "audio", "b64"} ... (bytes of the requested
        container, in order) then {"kind": "done", "usage": {"characters", "seconds"}}
    Everything else yields one {"kind": "done", "result": {...}, "usage": {...}}:
        embedding      result {"embeddings": [[float]]} or {"embeddings_b64": [base64 of
                       little-endian float32]}, usage {"prompt_tokens"}
        image(_variation) result {"images": [base64 PNG]}, usage {"images"}
        transcription/translation result {"text", "language", "duration", "segments":
            [{"id","start","end","text","tokens","temperature","avg_logprob",
              "compression_ratio","no_speech_prob"}], "words": [{"word","start","end"}]},
            usage {"seconds"}

    `slots` is how many jobs the worker may run at once on this engine (threads);
    engines whose library is not thread-safe keep 1.
    """

    name: str = ""
    capabilities: tuple[str, ...] = ()
    slots: int = 1

    @abc.abstractmethod
    def load(self, spec: ModelSpec) -> None: ...

    @abc.abstractmethod
    def unload(self) -> None: ...

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        """Bytes the model will take once loaded (weights plus working memory), on its
        device: VRAM for a GPU, RAM for the CPU. Must not load the model."""
        return 0

    def run(
        self, task: str, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        method = {
            TASK_CHAT: self.chat,
            TASK_COMPLETION: self.complete,
            TASK_EMBEDDING: self.embed,
            TASK_IMAGE: self.generate_image,
            TASK_IMAGE_VARIATION: self.vary_image,
            TASK_TRANSCRIPTION: self.transcribe,
            TASK_TRANSLATION: self.translate,
            TASK_SPEECH: self.speak,
        }.get(task)
        if method is None:
            raise wrong_task(self.name, task)
        return method(request, cancelled)

    # One method per task; an engine overrides those it serves.
    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_CHAT)

    def complete(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_COMPLETION)

    def embed(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_EMBEDDING)

    def generate_image(
        self, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_IMAGE)

    def vary_image(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_IMAGE_VARIATION)

    def transcribe(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_TRANSCRIPTION)

    def translate(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_TRANSLATION)

    def speak(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, TASK_SPEECH)
