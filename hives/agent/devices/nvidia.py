"""NVIDIA GPUs through NVML (nvidia-ml-py): devices 'cuda:N'."""

from __future__ import annotations

from typing import Any

from hives.agent.devices.common import logger, normalise_gpu_type
from hives.spec import DeviceKind


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
                    "kind": DeviceKind.CUDA,
                    "name": name,
                    "gpu_type": normalise_gpu_type(name),
                    "memory_total_mb": int(mem.total) // 2**20,
                    "memory_free_mb": int(mem.free) // 2**20,
                    "memory_used_mb": int(mem.used) // 2**20,
                    "utilization": util,
                }
            )
        return out
