"""The memory planner: may this model be loaded on this device, and what must go first?

rbee's promise is that no two models ever fight over a device's memory. Before a hive
loads a model on a device it asks `plan_placement`, which answers from the device's live
telemetry (the dicts of hives.agent.devices: NVML for NVIDIA, rocm-smi for AMD, unified
memory for Apple silicon, available RAM for the CPU) and the workers already there.

Pure: no I/O, no clock; the caller passes everything in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hives.protocol import WorkerState
from hives.spec import Device, SpecError

MiB = 2**20
GiB = 2**30
DEFAULT_HEADROOM = 256 * MiB


@dataclass(frozen=True)
class Resident:
    """A worker already on the device (or starting there)."""

    model: str
    device: str
    bytes: int  # its memory estimate
    pinned: bool
    busy: bool  # has jobs in flight
    last_used: float  # monotonic seconds; for LRU
    state: str  # a WorkerState: "ready", "starting", ...


@dataclass(frozen=True)
class Plan:
    fits: bool
    evict: list[str]  # models to unload first, least recently used first
    message: str  # when not fits: says what needs what and what is using the memory


def fmt_bytes(n: int | float) -> str:
    """Sizes for people: '39.0 GiB', '512 MiB', '1.5 KiB', '0 B'."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n >= 2**40:
        return f"{sign}{n / 2**40:.1f} TiB"
    if n >= GiB:
        return f"{sign}{n / GiB:.1f} GiB"
    if n >= MiB:
        return f"{sign}{n / MiB:.0f} MiB"
    if n >= 1024:
        return f"{sign}{n / 1024:.1f} KiB"
    return f"{sign}{int(n)} B"


def device_label(device: dict[str, Any]) -> str:
    """'cuda:0', 'rocm:1', 'metal:0', 'cpu': the device string workers are placed by."""
    if device.get("device"):
        return str(device["device"])
    return Device.of(device)


def _same_device(a: str, b: str) -> bool:
    """'cuda' is 'cuda:0'; 'cpu' is 'cpu:0' (one grammar: hives.spec.Device)."""
    try:
        return Device(a) == Device(b)
    except SpecError:
        return False


def _mb(device: dict[str, Any], key: str) -> int | None:
    value = device.get(key)
    if value is None:
        return None
    try:
        return int(value) * MiB
    except (TypeError, ValueError):
        return None


def _tags(r: Resident) -> str:
    tags = []
    if r.pinned:
        tags.append("pinned")
    if r.busy:
        tags.append("busy")
    if r.state != WorkerState.READY:
        tags.append(r.state)
    return f" ({', '.join(tags)})" if tags else ""


def plan_placement(
    *,
    model: str,
    need_bytes: int,
    device: dict[str, Any],
    residents: list[Resident],
    headroom_bytes: int = DEFAULT_HEADROOM,
) -> Plan:
    """Whether `model`, needing `need_bytes`, fits on `device`, and which idle models to
    unload first when it only fits without them.

    Free memory is the device's live `memory_free_mb`, less the estimates of residents
    still "starting" (a worker that is loading has not allocated everything yet, so
    telemetry does not show it; counting its whole estimate errs on the safe side), less
    `headroom_bytes` (allocator slack, CUDA/HIP contexts, activations growing). When that
    is not enough, idle (not busy), unpinned, "ready" residents are unloaded least
    recently used first, each giving back its estimate, until the model fits. Busy and
    pinned residents are never unloaded, nor are other replicas of `model` itself.

    Residents on other devices are ignored ('cuda' and 'cuda:0' are the same device),
    except on a device with unified memory (Apple silicon: `"unified": True`), where the
    CPU's residents live in the same memory and count, and may be unloaded, too.
    """
    label = device_label(device)
    unified = bool(device.get("unified"))
    here = [
        r
        for r in residents
        if _same_device(r.device, label) or (unified and _same_device(r.device, "cpu"))
    ]
    total = _mb(device, "memory_total_mb")
    free_now = _mb(device, "memory_free_mb")
    if not total or free_now is None:
        return Plan(
            False,
            [],
            f"cannot place {model} on {label}: the device reports no memory figures",
        )
    free_now = max(0, min(free_now, total))
    used = _mb(device, "memory_used_mb")
    used = total - free_now if used is None else max(0, used)

    if need_bytes > total - headroom_bytes:
        kept = f" less {fmt_bytes(headroom_bytes)} headroom" if need_bytes <= total else ""
        return Plan(
            False,
            [],
            f"cannot place {model} on {label}: it needs {fmt_bytes(need_bytes)} and the device "
            f"is too small: {fmt_bytes(total)} in total{kept}",
        )

    starting = sum(max(0, r.bytes) for r in here if r.state == WorkerState.STARTING)
    free = free_now - starting - headroom_bytes
    if need_bytes <= free:
        return Plan(
            True,
            [],
            f"{model} fits on {label}: it needs {fmt_bytes(need_bytes)} and "
            f"{fmt_bytes(free)} is free",
        )

    candidates = sorted(
        (
            r
            for r in here
            if r.state == WorkerState.READY and not r.busy and not r.pinned and r.model != model
        ),
        key=lambda r: (r.last_used, r.model),
    )
    evict: list[str] = []
    for r in candidates:
        evict.append(r.model)
        free += max(0, r.bytes)
        if need_bytes <= free:
            return Plan(
                True,
                evict,
                f"{model} fits on {label} after unloading {', '.join(evict)}: it needs "
                f"{fmt_bytes(need_bytes)} and {fmt_bytes(free)} will be free",
            )

    # Not even unloading every idle model is enough: say who holds the memory.
    visible = sum(max(0, r.bytes) for r in here if r.state != WorkerState.STARTING)
    others = used - visible  # memory telemetry sees that no resident accounts for
    in_use = [
        f"{r.model} {fmt_bytes(r.bytes)}{_tags(r)}"
        for r in sorted(here, key=lambda r: (-r.bytes, r.model))
    ]
    if others > 0:
        in_use.append(f"other processes {fmt_bytes(others)}")
    tail = f"; in use: {', '.join(in_use)}" if in_use else ""
    if need_bytes <= free + headroom_bytes:  # the headroom is what decided it
        tail += f"; {fmt_bytes(headroom_bytes)} is kept free as headroom"
    return Plan(
        False,
        [],
        f"cannot place {model} on {label}: it needs {fmt_bytes(need_bytes)} and "
        f"{fmt_bytes(free_now)} is free of {fmt_bytes(total)}{tail}",
    )
