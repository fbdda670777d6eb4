"""Small helpers shared by the torch-based engines (embeddings, diffusion, transformers).

rbee names devices its own way ("cpu", "cuda:N", "metal:0", "rocm:N") so that one
spelling works across hives; torch wants "cpu", "cuda:N" or "mps". This module does
the translation in one place, picks a dtype that suits the device, and sizes model
directories for memory estimates without importing torch.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from hives.agent.engines.base import EngineError
from hives.spec import Device, DeviceKind, ModelSpec, SpecError

# Files that hold weights; everything else in a model directory (tokenizer, configs,
# README, images) does not end up in device memory.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".onnx")


def torch_device(spec_device: str) -> str:
    """The torch device string for an rbee device name.

    "metal:N" is Apple's MPS backend (torch has a single "mps" device); "rocm:N" is
    "cuda:N" because ROCm builds of torch expose AMD GPUs through the CUDA API.
    """
    try:
        device = Device(spec_device or "cpu")
    except SpecError as exc:
        raise EngineError(exc.message, status=500, code="device_unknown") from exc
    if device.kind in (DeviceKind.CUDA, DeviceKind.ROCM):
        return f"cuda:{device.number}"
    if device.kind is DeviceKind.METAL:
        return "mps"
    return "cpu"


def torch_dtype(spec: ModelSpec) -> Any:
    """The dtype to load weights in: spec.options["dtype"] when given, else float16 on
    CUDA/ROCm (half the memory, tensor cores) and float32 on CPU and MPS, where half
    precision is slow or numerically fragile."""
    import torch

    name = spec.options.get("dtype")
    if name:
        dtype = getattr(torch, str(name).removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise EngineError(
                f"unknown dtype {name!r} in the model's options", status=500, code="bad_options"
            )
        return dtype
    return torch.float16 if torch_device(spec.device).startswith("cuda") else torch.float32


def dtype_bytes(spec: ModelSpec) -> int:
    """Bytes per parameter the weights will take on the device (without importing torch)."""
    name = str(spec.options.get("dtype") or "").removeprefix("torch.")
    if name:
        return {"float32": 4, "float": 4, "float64": 8, "bfloat16": 2, "float16": 2}.get(name, 2)
    return 2 if torch_device(spec.device).startswith("cuda") else 4


def dir_size(path: str | os.PathLike[str], *, weights_only: bool = True) -> int:
    """Total bytes of the files under `path` (a file's own size when it is a file);
    with weights_only, only files that hold weights count. 0 when it does not exist
    (a repo id not downloaded yet)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if not p.is_dir():
        return 0
    total = 0
    for root, _dirs, files in os.walk(p):
        for name in files:
            if weights_only and not name.endswith(WEIGHT_SUFFIXES):
                continue
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


_SAFETENSORS_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
    "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_VARIANT = re.compile(r"\.(fp16|fp32|bf16)(?=\.(safetensors|bin)$|-\d+-of-\d+)")


def _safetensors_params(path: Path) -> tuple[int, int] | None:
    """(floating-point parameters, bytes of the other tensors) from a safetensors
    file's header alone; None if it is not one."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 * 1024 * 1024:
                return None
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error):
        return None
    floats = other = 0
    for key, info in header.items():
        if key == "__metadata__" or not isinstance(info, dict):
            continue
        count = 1
        for dim in info.get("shape", []):
            count *= int(dim)
        dtype = str(info.get("dtype", ""))
        if dtype.startswith(("F", "BF")):
            floats += count
        else:
            other += count * _SAFETENSORS_BYTES.get(dtype, 1)
    return floats, other


def weights_bytes(path: str | os.PathLike[str], bytes_per_param: int) -> int:
    """Bytes the weights under `path` take once loaded with `bytes_per_param`-byte
    floats, whatever dtype they are stored in. Parameter counts come from safetensors
    headers (no tensor is read); other weight files count at their size. Of the
    variants of one file (x.safetensors, x.fp16.safetensors) only one is counted, and
    pickles are ignored in a folder that has safetensors (loaders prefer those)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []
    weights = [f for f in files if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)]
    # Loaders take safetensors over pickles when a folder has both.
    with_safetensors = {f.parent for f in weights if f.suffix == ".safetensors"}
    groups: dict[str, list[Path]] = {}
    for f in weights:
        if f.suffix != ".safetensors" and f.parent in with_safetensors:
            continue
        groups.setdefault(str(f.parent / _VARIANT.sub("", f.name)), []).append(f)
    total = 0
    for variants in groups.values():
        # Variants hold the same parameters; prefer one whose header can be read.
        f = min(variants, key=lambda v: (v.suffix != ".safetensors", v.name))
        parsed = _safetensors_params(f) if f.suffix == ".safetensors" else None
        if parsed is None:
            total += f.stat().st_size
        else:
            floats, other = parsed
            total += floats * bytes_per_param + other
    return total


def free_device_memory(device: str) -> None:
    """Hand cached blocks back to the driver after an unload."""
    import gc

    gc.collect()
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
        elif device == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()
    except Exception:  # freeing is best effort
        pass
