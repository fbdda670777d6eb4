"""Recorded machines (tests/fixtures/machines/*.json), replayed through a fake NVML."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DIR = Path(__file__).parent / "fixtures" / "machines"


def load_machine(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DIR / f"{name}.json").read_text())
    return data


class RecordedNvml:
    """The slice of the pynvml module that NvidiaDetector uses, answering from a recording."""

    def __init__(self, machine: dict[str, Any]) -> None:
        self.gpus = machine["gpus"]
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return dict(self.gpus[i])

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str | bytes:
        return h["name"].encode() if h.get("name_as_bytes") else h["name"]

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(
            total=h["memory_total"], used=h["memory_used"], free=h["memory_free"]
        )

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(gpu=h["utilization"], memory=0)


class NoDriverNvml:
    """What pynvml does on a machine without the NVIDIA driver."""

    def nvmlInit(self) -> None:
        raise RuntimeError("NVML Shared Library Not Found")
