"""What the device detectors share: the Detector interface, running a tool, reading its
output, logging each problem once, and turning product names into short GPU types."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, Protocol

logger = logging.getLogger("hives.devices")


class Detector(Protocol):
    def is_available(self) -> bool: ...

    def gather(self) -> list[dict[str, Any]]: ...


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


class LogOnce:
    """Logs each distinct reason a detector cannot see its devices once per detector."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, level: int, reason: str, *args: Any) -> None:
        message = reason % args if args else reason
        if message in self._seen:
            return
        self._seen.add(message)
        logger.log(level, "%s", message)


def first_json_object(text: str) -> Any:
    """The first JSON value in `text`: tools print warnings before their JSON
    ('WARNING: AMD GPU device(s) is/are in a low-power state. ...')."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the output")
    value, _ = json.JSONDecoder().raw_decode(text[start:])
    return value


def int_or_none(value: Any) -> int | None:
    try:
        return int(float(str(value).strip().rstrip("%")))
    except (TypeError, ValueError):
        return None
