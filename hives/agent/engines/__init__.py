"""Inference engines: one small interface, one implementation per file.

Engines are imported lazily by name, so a hive only needs the libraries of the
engines it actually runs (llama.cpp on a laptop, vLLM on a CUDA box).
"""

from __future__ import annotations

import importlib

from hives.agent.engines.base import Engine, EngineError

_ENGINES = {
    "llama.cpp": "hives.agent.engines.llamacpp:LlamaCppEngine",
    "echo": "hives.agent.engines.echo:EchoEngine",
    "faster-whisper": "hives.agent.engines.whisper:FasterWhisperEngine",
    "piper": "hives.agent.engines.piper:PiperEngine",
    "espeak-ng": "hives.agent.engines.piper:EspeakEngine",
    "sentence-transformers": "hives.agent.engines.embeddings:SentenceTransformersEngine",
    "diffusers": "hives.agent.engines.diffusion:DiffusersEngine",
    "diffusers-video": "hives.agent.engines.video:DiffusersVideoEngine",
    "transformers": "hives.agent.engines.transformers_engine:TransformersEngine",
    "vllm": "hives.agent.engines.vllm_engine:VLLMEngine",
    "openai": "hives.agent.engines.openai_engine:OpenAIEngine",
}


def engine_names() -> list[str]:
    return sorted(_ENGINES)


def get_engine(name: str) -> Engine:
    try:
        target = _ENGINES[name]
    except KeyError as exc:
        raise EngineError(f"unknown engine {name!r}; known: {', '.join(engine_names())}") from exc
    module, _, cls = target.partition(":")
    engine_cls = getattr(importlib.import_module(module), cls)
    engine: Engine = engine_cls()
    return engine


__all__ = ["Engine", "EngineError", "engine_names", "get_engine"]
