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


class Engine(abc.ABC):
    """load() once, then chat() per request, then unload().

    chat() yields events: {"kind": "delta", "text"} ... then exactly one
    {"kind": "done", "finish_reason", "usage": {"prompt_tokens", "completion_tokens"}}.
    It raises EngineError for a request the model cannot serve.
    """

    name: str = ""
    capabilities: tuple[str, ...] = ()

    @abc.abstractmethod
    def load(self, spec: ModelSpec) -> None: ...

    @abc.abstractmethod
    def unload(self) -> None: ...

    def memory_estimate_bytes(self, spec: ModelSpec) -> int:
        """Bytes the model will take once loaded (weights plus working memory)."""
        return 0

    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        raise EngineError(
            f"engine {self.name!r} does not serve chat", status=400, code="wrong_model_type"
        )
