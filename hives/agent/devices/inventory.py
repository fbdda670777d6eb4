"""GPUs from a recorded inventory file (`rbee hive start --inventory FILE`): demos, tests
and scheduling dry runs present a machine's GPUs while the engines run on this one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hives.agent.devices.nvidia import NvidiaDetector
from hives.spec import DeviceKind

# Machines recorded from real NVML answers (shipped: `rbee hive start --inventory NAME`, the
# scheduler's dry run, tests).
MACHINES_DIR = Path(__file__).resolve().parent / "machines"


def recorded_machines() -> list[str]:
    """The names of the recorded machines."""
    return sorted(p.stem for p in MACHINES_DIR.glob("*.json"))


def recorded_machine_path(name: str) -> Path:
    """The file of a recorded machine; KeyError naming the known ones if there is none."""
    path = MACHINES_DIR / f"{name}.json"
    if name not in recorded_machines():
        raise KeyError(f"no recorded machine {name!r}; known: {', '.join(recorded_machines())}")
    return path


def load_inventory(name_or_path: str) -> dict[str, Any]:
    """An inventory from a file, or a recorded machine by name."""
    path = Path(name_or_path)
    if not path.is_file():
        path = recorded_machine_path(name_or_path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class RecordedNvml:
    """The slice of pynvml that NvidiaDetector uses, answering from a recorded inventory.

    The inventory is JSON: {"gpus": [{"name", "memory_total", "memory_used", "memory_free",
    "utilization"}, ...]} (bytes). `rbee hive start --inventory FILE` uses it to present a
    machine's GPUs to the queen (demos, tests, scheduling dry runs) while the engines run on
    whatever this machine has.
    """

    def __init__(self, inventory: dict[str, Any]) -> None:
        self.gpus = list(inventory.get("gpus") or [])

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return dict(self.gpus[i])

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> str | bytes:
        name = str(h["name"])
        return name.encode() if h.get("name_as_bytes") else name

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(
            total=h["memory_total"], used=h["memory_used"], free=h["memory_free"]
        )

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(gpu=h.get("utilization", 0), memory=0)


class InventoryDetector:
    """GPUs described in an inventory file (see RecordedNvml); each entry may name its
    `kind` (cuda, metal, rocm; default cuda)."""

    def __init__(self, inventory: dict[str, Any]) -> None:
        self.gpus = list(inventory.get("gpus") or [])
        self.kinds = [_gpu_kind(entry) for entry in self.gpus]
        self.nvidia = NvidiaDetector(RecordedNvml(inventory))

    def is_available(self) -> bool:
        return bool(self.gpus)

    def gather(self) -> list[dict[str, Any]]:
        devices = self.nvidia.gather()
        for dev, kind in zip(devices, self.kinds, strict=True):
            dev["kind"] = kind
            if kind is DeviceKind.METAL:
                dev["unified"] = True  # Apple silicon: see AppleDetector
        return devices


def _gpu_kind(entry: dict[str, Any]) -> DeviceKind:
    kind = str(entry.get("kind") or DeviceKind.CUDA)
    if kind not in {k.value for k in DeviceKind} or kind == DeviceKind.CPU:
        raise ValueError(
            f"bad GPU kind {kind!r} in the inventory of {entry.get('name')!r}: "
            "use cuda, rocm or metal"
        )
    return DeviceKind(kind)
