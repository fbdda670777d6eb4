"""Device detection: one small detector per kind of device, one module each.

    nvidia.py     NVIDIA GPUs through NVML                 cuda:N
    rocm.py       AMD GPUs through rocm-smi                rocm:N
    apple.py      Apple silicon's GPU (unified memory)     metal:0
    cpu.py        the CPU                                  cpu
    inventory.py  GPUs from a recorded inventory file (`rbee hive start --inventory`)
    common.py     the Detector interface and what the detectors share

Each detector answers `is_available()` and `gather()`; `gather()` returns plain
dicts (sent to the queen in the hello and in every heartbeat):

    {"index", "kind": "cpu"|"cuda"|..., "name", "gpu_type", "memory_total_mb",
     "memory_free_mb", "memory_used_mb", "utilization"}

`hives.spec.Device.of(entry)` is the device name an entry stands for ('cuda:1').
This package's own interface: `detect_devices()`, `default_detectors()` and
`use_inventory()`.
"""

from __future__ import annotations

from typing import Any

from hives.agent.devices.apple import AppleDetector
from hives.agent.devices.common import Detector, logger
from hives.agent.devices.cpu import CpuDetector
from hives.agent.devices.inventory import InventoryDetector
from hives.agent.devices.nvidia import NvidiaDetector
from hives.agent.devices.rocm import RocmDetector

__all__ = ["Detector", "default_detectors", "detect_devices", "use_inventory"]

_DEFAULT: list[Detector] = []


def default_detectors() -> list[Detector]:
    """This machine's detectors, made once (NVML is initialised once per process)."""
    if not _DEFAULT:
        _DEFAULT.extend([NvidiaDetector(), RocmDetector(), AppleDetector(), CpuDetector()])
    return _DEFAULT


def detect_devices(detectors: list[Detector] | None = None) -> list[dict[str, Any]]:
    """All devices of this machine; GPUs first, the CPU last."""
    found: list[dict[str, Any]] = []
    chosen: list[Detector] = detectors if detectors is not None else default_detectors()
    for det in chosen:
        try:
            if det.is_available():
                found.extend(det.gather())
        except Exception:
            logger.exception("device detector %s failed", type(det).__name__)
    return found


def use_inventory(inventory: dict[str, Any]) -> None:
    """Make this process's detectors report `inventory`'s GPUs (and the real CPU)."""
    _DEFAULT[:] = [InventoryDetector(inventory), CpuDetector()]
