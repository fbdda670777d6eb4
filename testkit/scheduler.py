"""The seed scheduler scripts and the recorded machines, as the scheduler sees them."""

from __future__ import annotations

from pathlib import Path

from hives.agent.devices.inventory import InventoryDetector
from hives.selectors import Placement
from testkit.machines import load_machine

SEEDS = Path(__file__).parent / "seed_scheduler_scripts.rhai"


def seed_scripts() -> list[str]:
    """The six scripts of the product documents, verbatim, in document order."""
    parts: list[str] = []
    for line in SEEDS.read_text().splitlines(keepends=True):
        if line.startswith("// ---- from"):
            parts.append("")
        parts[-1] += line
    return parts


def placements(
    machine: str,
    hive: str,
    model: str,
    *,
    capability: str = "text-gen",
    region: str = "",
    first_id: int = 1,
) -> list[Placement]:
    """One placement per GPU of a recorded machine (device cuda:N)."""
    devices = InventoryDetector(load_machine(machine)).gather()
    return [
        Placement(
            worker_id=first_id + i,
            hive_id=first_id,
            hive_name=hive,
            channel_name="",
            device=f"{d['kind']}:{d['index']}",
            inflight=0,
            region=region,
            gpu_type=d["gpu_type"],
            vram_free_mb=d["memory_free_mb"],
            vram_total_mb=d["memory_total_mb"],
            capability=capability,
            model=model,
        )
        for i, d in enumerate(devices)
    ]
