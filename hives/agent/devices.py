"""Device detection: one small detector per kind of device.

Each detector answers `is_available()` and `gather()`; `gather()` returns plain
dicts (sent to the queen in the hello and in every heartbeat):

    {"index", "kind": "cpu"|"cuda"|..., "name", "gpu_type", "memory_total_mb",
     "memory_free_mb", "memory_used_mb", "utilization"}
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psutil

logger = logging.getLogger("hives.devices")


def normalise_gpu_type(name: str) -> str:
    """A short, script-friendly GPU type from a vendor's product name.

    'NVIDIA GeForce RTX 4090' -> 'RTX4090', 'NVIDIA H100 80GB HBM3' -> 'H100',
    'Apple M2 Ultra' -> 'M2Ultra', 'AMD Instinct MI300X' -> 'MI300X',
    'Radeon RX 7900 XTX' -> 'RX7900XTX', 'AMD Radeon Pro W7900' -> 'W7900'.
    A name that lists several cards ('Navi 31 [Radeon RX 7900 XT/7900 XTX/7900M]', the
    PCI database's wording) gives the family only ('RX7900'): guessing would be worse.
    """
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
    m = re.search(r"(MI\d{2,3}[XA]?)", text)
    if m:
        return m.group(1)
    # AMD Radeon: 'RX 7900 XTX', 'RX 6800 XT', 'RX 7900 GRE', 'RX 7900M'
    m = re.search(r"\bRX\s*(\d{3,4})\s*(XTX|XT|GRE|M|S)?\b", text)
    if m:
        if text[m.end() :].lstrip().startswith("/"):  # 'RX 7900 XT/7900 XTX': which one?
            return "RX" + m.group(1)
        return "RX" + m.group(1) + (m.group(2) or "")
    m = re.search(r"\bPRO\s+([WV]\d{3,4}X?)\b", text)  # Radeon Pro W7900, V710
    if m:
        return m.group(1)
    m = re.search(r"\bRADEON\s+(\d{3,4}M)\b", text)  # integrated: Radeon 780M
    if m:
        return "Radeon" + m.group(1)
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


Runner = Callable[[Sequence[str], float], str]
"""Runs a command (argv, timeout in seconds) and returns its stdout. Raises OSError
(FileNotFoundError when the binary is missing) or subprocess.TimeoutExpired."""


def run_command(argv: Sequence[str], timeout: float) -> str:
    """The real Runner. The exit status is ignored: rocm-smi exits 0 when it fails and
    non-zero when one metric is unsupported, so the output is the only signal."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        check=False,
    )
    return proc.stdout


class _LogOnce:
    """Logs each distinct reason a detector cannot see its devices once per detector."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, level: int, reason: str, *args: Any) -> None:
        message = reason % args if args else reason
        if message in self._seen:
            return
        self._seen.add(message)
        logger.log(level, "%s", message)


def _first_json_object(text: str) -> Any:
    """The first JSON value in `text`: tools print warnings before their JSON
    ('WARNING: AMD GPU device(s) is/are in a low-power state. ...')."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the output")
    value, _ = json.JSONDecoder().raw_decode(text[start:])
    return value


def _int_or_none(value: Any) -> int | None:
    try:
        return int(float(str(value).strip().rstrip("%")))
    except (TypeError, ValueError):
        return None


# A few of libdrm's amdgpu.ids lines (device id, revision -> marketing name): the cards
# whose PCI-database name lists several products ('Navi 31 [Radeon RX 7900 XT/7900 XTX/
# 7900M]'). The system's own copy (/usr/share/libdrm/amdgpu.ids) is read too when present.
_AMDGPU_IDS: dict[tuple[int, int], str] = {
    (0x744C, 0xC8): "AMD Radeon RX 7900 XTX",
    (0x744C, 0xCC): "AMD Radeon RX 7900 XT",
    (0x744C, 0xCE): "AMD Radeon RX 7900 GRE",
    (0x744C, 0xCF): "AMD Radeon RX 7900M",
    (0x747E, 0xC8): "AMD Radeon RX 7800 XT",
    (0x747E, 0xFF): "AMD Radeon RX 7700 XT",
}
AMDGPU_IDS_PATH = "/usr/share/libdrm/amdgpu.ids"


def _hex(value: Any) -> int | None:
    try:
        return int(str(value).strip(), 16)
    except (TypeError, ValueError):
        return None


def _read_amdgpu_ids(path: str | None) -> dict[tuple[int, int], str]:
    """libdrm's table, lines of 'device_id,\trevision,\tmarketing name' (hex)."""
    table = dict(_AMDGPU_IDS)
    if not path:
        return table
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = [p.strip() for p in line.split(",", 2)]
                if line.startswith("#") or len(parts) != 3 or not parts[2]:
                    continue
                dev_id, rev = _hex(parts[0]), _hex(parts[1])
                if dev_id is not None and rev is not None:
                    table[(dev_id, rev)] = parts[2]
    except OSError:
        pass
    return table


class RocmDetector:
    """AMD GPUs through `rocm-smi --json`. `runner` can be injected for tests.

    rocm-smi prints one object per card, keyed 'card0', 'card1', ... (plus sometimes
    'system'); every value is a string:

        {"card0": {"GPU use (%)": "0", "VRAM Total Memory (B)": "205822885888",
                   "VRAM Total Used Memory (B)": "293027840",
                   "Card Series": "AMD Instinct MI300X OAM", "Card Model": "0x74a1", ...}}

    ROCm 5 spells the product keys 'Card series'/'Card model'/'Card vendor'; ROCm 6
    capitalises them and adds 'Device Rev' and 'GFX Version'. The card number is the
    device index: the device string is 'rocm:N'.
    """

    COMMAND = ("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--showuse", "--json")

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        timeout: float = 10.0,
        amdgpu_ids: str | None = AMDGPU_IDS_PATH,
    ) -> None:
        self._run = runner or run_command
        self._timeout = timeout
        self._ids_path = amdgpu_ids
        self._ids: dict[tuple[int, int], str] | None = None
        self._missing = False  # no rocm-smi: it does not appear while we run
        self._pending: list[dict[str, Any]] | None = None
        self._log = _LogOnce()

    def _query(self) -> list[dict[str, Any]] | None:
        if self._missing:
            return None
        try:
            out = self._run(self.COMMAND, self._timeout)
        except FileNotFoundError:
            self._missing = True
            self._log(logging.DEBUG, "rocm-smi not found: no AMD GPUs")
            return None
        except subprocess.TimeoutExpired:
            self._log(logging.WARNING, "rocm-smi did not answer in %ss", self._timeout)
            return None
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            self._log(logging.WARNING, "rocm-smi failed: %s", exc)
            return None
        try:
            data = _first_json_object(out)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return self._parse(data)
        except (ValueError, TypeError) as exc:
            self._log(logging.WARNING, "rocm-smi gave output rbee cannot read: %s", exc)
            return None

    def _name(self, card: dict[str, Any]) -> str:
        def field(*keys: str) -> str:
            for key in keys:
                value = str(card.get(key) or "").strip()
                if value and value.upper() != "N/A" and not value.lower().startswith("0x"):
                    return value
            return ""

        series = field("Card Series", "Card series", "Device Name")
        if series and "/" not in series:
            return series
        # The PCI database's name lists several cards, or there is none: libdrm's
        # marketing name from the device id and revision tells them apart.
        if self._ids is None:
            self._ids = _read_amdgpu_ids(self._ids_path)
        # ROCm 6: 'Card Model' is the PCI device id ('0x744c'); ROCm 5's 'Card model' is
        # the subsystem, so it is not used here.
        dev_id = _hex(card.get("Card Model") or card.get("Device ID") or card.get("GPU ID"))
        rev = _hex(card.get("Device Rev"))
        marketing = self._ids.get((dev_id, rev)) if dev_id is not None and rev is not None else None
        if marketing:
            return marketing
        return series or field("Card Model", "Card model", "Card SKU") or "AMD GPU"

    def _parse(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for key, card in data.items():
            m = re.fullmatch(r"card(\d+)", str(key))
            if not m or not isinstance(card, dict):
                continue  # 'system' and anything else that is not a card
            total = _int_or_none(card.get("VRAM Total Memory (B)"))
            used = _int_or_none(card.get("VRAM Total Used Memory (B)"))
            if not total or used is None:
                self._log(logging.WARNING, "rocm-smi reports no VRAM for %s: left out", key)
                continue
            name = self._name(card)
            out.append(
                {
                    "index": int(m.group(1)),
                    "kind": "rocm",
                    "name": name,
                    "gpu_type": normalise_gpu_type(name),
                    "memory_total_mb": total // 2**20,
                    "memory_free_mb": max(0, total - used) // 2**20,
                    "memory_used_mb": used // 2**20,
                    "utilization": _int_or_none(card.get("GPU use (%)")),
                }
            )
        out.sort(key=lambda d: int(d["index"]))
        return out

    def is_available(self) -> bool:
        # The answer is kept for the gather() that follows, so one heartbeat runs
        # rocm-smi once.
        self._pending = self._query()
        return bool(self._pending)

    def gather(self) -> list[dict[str, Any]]:
        devices, self._pending = self._pending, None
        if devices is None:
            devices = self._query()
        return devices or []


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
        self._log = _LogOnce()

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
                data = _first_json_object(out)
                for gpu in data.get("SPDisplaysDataType") or []:
                    model = str(gpu.get("sppci_model") or gpu.get("_name") or "")
                    if model.startswith("Apple"):
                        return model, _int_or_none(gpu.get("sppci_cores"))
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
        memsize = _int_or_none((self._text(("sysctl", "-n", "hw.memsize")) or "").strip())
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
            "kind": "metal",
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
            if dev["kind"] == "metal":
                dev["unified"] = True  # Apple silicon: see AppleDetector
        return devices


def use_inventory(inventory: dict[str, Any]) -> None:
    """Make this process's detectors report `inventory`'s GPUs (and the real CPU)."""
    _DEFAULT[:] = [InventoryDetector(inventory), CpuDetector()]
