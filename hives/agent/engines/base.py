"""The engine interface every worker runs."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any

from hives.protocol import Capability, Task
from hives.spec import ModelSpec


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


Cancelled = Callable[[], bool]

__all__ = [
    "Cancelled",
    "Engine",
    "EngineError",
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


def hub_ref(source: str, options: dict[str, Any] | None = None) -> tuple[str, str | None]:
    """A Hub source and the revision to pin: `org/name@rev` -> ("org/name", "rev"); an
    options `revision` names it too. A local path (or a plain repo id with no revision) is
    returned as it is, with None (the library's default, the main branch)."""
    import os

    revision = str((options or {}).get("revision") or "") or None
    if not source or source.startswith(("/", "./", "../", "~")) or os.path.exists(source):
        return source, None
    repo, at, rev = source.partition("@")
    if at and rev and repo.count("/") == 1:
        return repo, revision or rev
    return source, revision


def wrong_task(engine: str, task: str) -> EngineError:
    return EngineError(
        f"engine {engine!r} does not serve {str(task)!r} requests",
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
        A delta may also carry `tool_calls` pieces and `logprobs` (docs/tools.md).
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
        video          {"kind": "progress", "progress": 0-100} ... then result {"video_b64":
                       base64 MP4, "seconds", "frames", "fps", "size"}, usage {"video_seconds"}

    `slots` is how many jobs the worker may run at once on this engine (threads);
    engines whose library is not thread-safe keep 1.
    """

    name: str = ""
    capabilities: tuple[Capability, ...] = ()
    slots: int = 1
    model_name: str = ""  # the public model id (spec.name), set by load(): for errors
    # Seconds between two calls of health() in the worker (0: the engine has no backend
    # of its own to watch; local models are up once loaded).
    health_interval: float = 0.0

    @abc.abstractmethod
    def load(self, spec: ModelSpec) -> None: ...

    @abc.abstractmethod
    def unload(self) -> None: ...

    def health(self) -> str:
        """'' while the engine serves; else why not (its upstream server is down, say).
        Called every `health_interval` seconds on a thread of its own."""
        return ""

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        """Bytes the model will take once loaded (weights plus working memory), on its
        device: VRAM for a GPU, RAM for the CPU. Must not load the model."""
        return 0

    def run(
        self, task: str, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        methods: dict[str, Callable[[dict[str, Any], Cancelled], Iterator[dict[str, Any]]]] = {
            Task.CHAT: self.chat,
            Task.COMPLETION: self.complete,
            Task.EMBEDDING: self.embed,
            Task.IMAGE: self.generate_image,
            Task.IMAGE_VARIATION: self.vary_image,
            Task.TRANSCRIPTION: self.transcribe,
            Task.TRANSLATION: self.translate,
            Task.SPEECH: self.speak,
            Task.VIDEO: self.generate_video,
        }
        method = methods.get(task)
        if method is None:
            raise wrong_task(self.name, task)
        return method(request, cancelled)

    # One method per task; an engine overrides those it serves.
    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.CHAT)

    def complete(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.COMPLETION)

    def embed(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.EMBEDDING)

    def generate_image(
        self, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.IMAGE)

    def vary_image(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.IMAGE_VARIATION)

    def transcribe(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.TRANSCRIPTION)

    def translate(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.TRANSLATION)

    def speak(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.SPEECH)

    def generate_video(
        self, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        raise wrong_task(self.name, Task.VIDEO)
