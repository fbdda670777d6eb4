"""Recorded machines (tests/fixtures/machines/*.json), replayed through a fake NVML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hives.agent.devices.inventory import RecordedNvml

DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "machines"


def load_machine(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DIR / f"{name}.json").read_text())
    return data


def machine_path(name: str) -> str:
    return str(DIR / f"{name}.json")


class CountingNvml(RecordedNvml):
    def __init__(self, machine: dict[str, Any]) -> None:
        super().__init__(machine)
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1


class NoDriverNvml:
    """What pynvml does on a machine without the NVIDIA driver."""

    def nvmlInit(self) -> None:
        raise RuntimeError("NVML Shared Library Not Found")
