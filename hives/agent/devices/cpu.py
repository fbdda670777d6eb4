"""The CPU: one device, index 0, kind 'cpu', its memory what the OS says is available."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from hives.spec import DeviceKind


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
                "kind": DeviceKind.CPU,
                "name": _cpu_name(),
                "gpu_type": "CPU",
                "cores": os.cpu_count() or 1,
                "memory_total_mb": vm.total // 2**20,
                "memory_free_mb": vm.available // 2**20,
                "memory_used_mb": (vm.total - vm.available) // 2**20,
                "utilization": psutil.cpu_percent(interval=None),
            }
        ]
