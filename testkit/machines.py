"""Recorded machines (hives/agent/devices/machines/*.json, shipped with the hive),
replayed through a fake NVML."""

from __future__ import annotations

from typing import Any

from hives.agent.devices.inventory import RecordedNvml, load_inventory, recorded_machine_path


def load_machine(name: str) -> dict[str, Any]:
    return load_inventory(str(recorded_machine_path(name)))


def machine_path(name: str) -> str:
    return str(recorded_machine_path(name))


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
