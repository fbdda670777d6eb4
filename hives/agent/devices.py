"""Device detection: one small detector per kind of device.

Each detector answers `is_available()` and `gather()`; `gather()` returns plain
dicts (sent to the queen in the hello and in every heartbeat):

    {"index", "kind": "cpu"|"cuda"|..., "name", "gpu_type", "memory_total_mb",
     "memory_free_mb", "memory_used_mb", "utilization"}
"""

from __future__ import annotations

import logging
import os
import platform
import re
from typing import Any, Protocol

import psutil

logger = logging.getLogger("hives.devices")


def normalise_gpu_type(name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'RTX4090', 'NVIDIA H100 80GB HBM3' -> 'H100'."""
    text = name.upper().replace("NVIDIA", "").replace("GEFORCE", "").strip()
    m = re.search(r"\b(RTX|GTX)\s*(\d{3,4})\s*(TI|SUPER)?", text)
    if m:
        return m.group(1) + m.group(2) + (m.group(3).title() if m.group(3) else "")
    m = re.search(r"\b([AHBL]\d{2,3}|V100|T4|L4|L40S?|GH200|GB200)\b", text)
    if m:
        return m.group(1)
    m = re.search(r"APPLE\s+(M\d)\s*(PRO|MAX|ULTRA)?", text)
    if m:
        return m.group(1) + (m.group(2).title() if m.group(2) else "")
    m = re.search(r"(MI\d{2,3}X?)", text)
    if m:
        return m.group(1)
    return re.sub(r"[^A-Za-z0-9]", "", text) or "GPU"


class Detector(Protocol):
    def is_available(self) -> bool: ...

    def gather(self) -> list[dict[str, Any]]: ...


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


class CpuDetector:
    def is_available(self) -> bool:
        return True

    def gather(self) -> list[dict[str, Any]]:
        vm = psutil.virtual_memory()
        return [
            {
                "index": 0,
                "kind": "cpu",
                "name": _cpu_name(),
                "gpu_type": "CPU",
                "cores": os.cpu_count() or 1,
                "memory_total_mb": vm.total // 2**20,
                "memory_free_mb": vm.available // 2**20,
                "memory_used_mb": (vm.total - vm.available) // 2**20,
                "utilization": psutil.cpu_percent(interval=None),
            }
        ]


class NvidiaDetector:
    """NVIDIA GPUs through NVML (nvidia-ml-py). `nvml` can be injected for tests."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self._ready = False
        self._failed = False

    def _lib(self) -> Any | None:
        if self._nvml is None:
            try:
                import pynvml

                self._nvml = pynvml
            except ImportError:
                return None
        if not self._ready:
            if self._failed:
                return None
            try:
                self._nvml.nvmlInit()
                self._ready = True
            except Exception as exc:  # no driver, no GPU: the common case on CPU boxes
                logger.debug("NVML unavailable: %s", exc)
                self._failed = True  # the driver does not appear while we run
                return None
        return self._nvml

    def is_available(self) -> bool:
        lib = self._lib()
        if lib is None:
            return False
        try:
            return int(lib.nvmlDeviceGetCount()) > 0
        except Exception:
            return False

    def gather(self) -> list[dict[str, Any]]:
        lib = self._lib()
        if lib is None:
            return []
        out = []
        for i in range(int(lib.nvmlDeviceGetCount())):
            h = lib.nvmlDeviceGetHandleByIndex(i)
            name = lib.nvmlDeviceGetName(h)
            if isinstance(name, bytes):
                name = name.decode()
            mem = lib.nvmlDeviceGetMemoryInfo(h)
            try:
                util = int(lib.nvmlDeviceGetUtilizationRates(h).gpu)
            except Exception:
                util = None
            out.append(
                {
                    "index": i,
                    "kind": "cuda",
                    "name": name,
                    "gpu_type": normalise_gpu_type(name),
                    "memory_total_mb": int(mem.total) // 2**20,
                    "memory_free_mb": int(mem.free) // 2**20,
                    "memory_used_mb": int(mem.used) // 2**20,
                    "utilization": util,
                }
            )
        return out


_DEFAULT: list[Detector] = []


def default_detectors() -> list[Detector]:
    """This machine's detectors, made once (NVML is initialised once per process)."""
    if not _DEFAULT:
        _DEFAULT.extend([NvidiaDetector(), CpuDetector()])
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
        self.nvidia = NvidiaDetector(RecordedNvml(inventory))

    def is_available(self) -> bool:
        return bool(self.gpus)

    def gather(self) -> list[dict[str, Any]]:
        devices = self.nvidia.gather()
        for dev, entry in zip(devices, self.gpus, strict=True):
            dev["kind"] = str(entry.get("kind") or "cuda")
        return devices


def use_inventory(inventory: dict[str, Any]) -> None:
    """Make this process's detectors report `inventory`'s GPUs (and the real CPU)."""
    _DEFAULT[:] = [InventoryDetector(inventory), CpuDetector()]
