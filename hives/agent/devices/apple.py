"""Apple silicon's GPU through Metal: one device, 'metal:0', in unified memory."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from hives.agent.devices.common import (
    LogOnce,
    Runner,
    first_json_object,
    int_or_none,
    normalise_gpu_type,
    run_command,
)
from hives.spec import DeviceKind


class AppleDetector:
    """Apple silicon's GPU through Metal, reported as one device: index 0, kind 'metal'.

    Apple silicon has unified memory: the GPU and the CPU share the same RAM, so the
    'metal' device and the 'cpu' device report the same memory and whatever one loads
    the other loses. Total is `sysctl -n hw.memsize`; free is what the OS says is
    available (psutil), there being no separate VRAM to ask about. Metal lets one
    process wire only part of it (recommendedMaxWorkingSetSize, about 2/3 to 3/4 of RAM
    unless `iogpu.wired_limit_mb` is raised), which the engines have to respect.

    The chip name comes from `system_profiler SPDisplaysDataType -json` (sppci_model,
    'Apple M2 Ultra'), `sysctl -n machdep.cpu.brand_string` when that fails. Both are
    read once: system_profiler takes most of a second. `runner`, `system`, `machine`
    and `available` can be injected for tests.
    """

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        system: str | None = None,
        machine: str | None = None,
        available: Callable[[], int] | None = None,
        timeout: float = 15.0,
    ) -> None:
        self._run = runner or run_command
        self._system = system
        self._machine = machine
        self._available = available or (lambda: int(psutil.virtual_memory().available))
        self._timeout = timeout
        self._static: dict[str, Any] | None = None
        self._failed = False
        self._log = LogOnce()

    def _is_apple_silicon(self) -> bool:
        system = self._system if self._system is not None else platform.system()
        machine = self._machine if self._machine is not None else platform.machine()
        return system == "Darwin" and machine == "arm64"

    def _text(self, argv: Sequence[str]) -> str | None:
        try:
            return self._run(argv, self._timeout)
        except subprocess.TimeoutExpired:
            self._log(logging.WARNING, "%s did not answer in %ss", argv[0], self._timeout)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            self._log(logging.WARNING, "%s failed: %s", argv[0], exc)
        return None

    def _chip(self) -> tuple[str, int | None] | None:
        out = self._text(("system_profiler", "SPDisplaysDataType", "-json"))
        if out:
            try:
                data = first_json_object(out)
                for gpu in data.get("SPDisplaysDataType") or []:
                    model = str(gpu.get("sppci_model") or gpu.get("_name") or "")
                    if model.startswith("Apple"):
                        return model, int_or_none(gpu.get("sppci_cores"))
            except (ValueError, TypeError, AttributeError) as exc:
                self._log(logging.WARNING, "system_profiler gave unreadable output: %s", exc)
        brand = (self._text(("sysctl", "-n", "machdep.cpu.brand_string")) or "").strip()
        if brand.startswith("Apple"):
            return brand, None
        return None

    def _static_info(self) -> dict[str, Any] | None:
        if self._static is not None or self._failed:
            return self._static
        chip = self._chip()
        memsize = int_or_none((self._text(("sysctl", "-n", "hw.memsize")) or "").strip())
        if chip is None or not memsize:
            # Tried once: the chip does not change while we run.
            self._failed = True
            self._log(logging.WARNING, "Apple silicon, but its GPU could not be identified")
            return None
        self._static = {"name": chip[0], "gpu_cores": chip[1], "memory_total": memsize}
        return self._static

    def _torch_says_no(self) -> bool:
        # Only when torch is already imported: importing it costs seconds and memory.
        torch = sys.modules.get("torch")
        if torch is None:
            return False
        try:
            return not bool(torch.backends.mps.is_available())
        except Exception:
            return False

    def is_available(self) -> bool:
        if not self._is_apple_silicon():
            return False
        return self._static_info() is not None and not self._torch_says_no()

    def gather(self) -> list[dict[str, Any]]:
        if not self._is_apple_silicon():
            return []
        info = self._static_info()
        if info is None:
            return []
        total = int(info["memory_total"])
        free = min(total, max(0, int(self._available())))
        dev: dict[str, Any] = {
            "index": 0,
            "kind": DeviceKind.METAL,
            "name": info["name"],
            "gpu_type": normalise_gpu_type(info["name"]),
            "memory_total_mb": total // 2**20,
            "memory_free_mb": free // 2**20,
            "memory_used_mb": (total - free) // 2**20,
            "utilization": None,  # only `sudo powermetrics` knows
            "unified": True,  # shared with the CPU: see the class docstring
        }
        if info["gpu_cores"]:
            dev["gpu_cores"] = info["gpu_cores"]
        return [dev]
