"""AMD GPUs through `rocm-smi --json`: devices 'rocm:N'."""

from __future__ import annotations

import logging
import re
import subprocess
from typing import Any

from hives.agent.devices.common import (
    LogOnce,
    Runner,
    first_json_object,
    int_or_none,
    normalise_gpu_type,
    run_command,
)
from hives.spec import DeviceKind

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
        self._log = LogOnce()

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
            data = first_json_object(out)
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
            total = int_or_none(card.get("VRAM Total Memory (B)"))
            used = int_or_none(card.get("VRAM Total Used Memory (B)"))
            if not total or used is None:
                self._log(logging.WARNING, "rocm-smi reports no VRAM for %s: left out", key)
                continue
            name = self._name(card)
            out.append(
                {
                    "index": int(m.group(1)),
                    "kind": DeviceKind.ROCM,
                    "name": name,
                    "gpu_type": normalise_gpu_type(name),
                    "memory_total_mb": total // 2**20,
                    "memory_free_mb": max(0, total - used) // 2**20,
                    "memory_used_mb": used // 2**20,
                    "utilization": int_or_none(card.get("GPU use (%)")),
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
