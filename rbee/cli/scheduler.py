"""`rbee scheduler`: the Rhai script that admits and routes every request."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from kernel.paths import config_dir
from rbee.cli._common import cli_actor, fail, note, uses_database, uses_django

SAMPLE_FLEET = Path(__file__).with_name("sample_fleet.json")


@click.group()
def scheduler() -> None:
    """The Rhai script that admits and routes every request."""


@scheduler.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@uses_django  # no database is touched
def scheduler_check(file: str) -> None:
    """Compile FILE and dry-run it against sample tasks; exit 1 with line:col on error."""
    from inference.scheduler import Policy, ScriptError, dry_run

    path = Path(file)
    if not path.is_file():
        fail(f"{file}: no such file")
    try:
        policy = Policy(path.read_text())
    except ScriptError as exc:
        note(f"{file}:{exc}")
        sys.exit(1)
    for line in dry_run(policy, sample_fleet()):
        click.echo(line)
    if policy.errors:
        for err in dict.fromkeys(policy.errors):  # each distinct error once
            note(f"{file}:{err}")
        sys.exit(1)
    note(f"{file}: ok")


def sample_fleet() -> list[Any]:
    """The dry run's fleet (sample_fleet.json beside this module): each worker on a GPU of a
    recorded machine, with that GPU's type and memory as the hive would report them."""
    from hives.agent.devices.inventory import InventoryDetector, load_inventory
    from hives.selectors import Placement
    from hives.spec import Device

    fleet = json.loads(SAMPLE_FLEET.read_text())
    workers = []
    for i, w in enumerate(fleet["workers"], start=1):
        gpu = InventoryDetector(load_inventory(w["machine"])).gather()[w["gpu"]]
        workers.append(
            Placement(
                worker_id=i,
                hive_id=i,
                hive_name=w["hive"],
                channel_name="",
                device=Device(f"{gpu['kind']}:{gpu['index']}"),
                inflight=w["inflight"],
                gpu_type=gpu["gpu_type"],
                vram_free_mb=gpu["memory_free_mb"],
                vram_total_mb=gpu["memory_total_mb"],
                capability=w["capability"],
                model=w["model"],
            )
        )
    return workers


@scheduler.command("reload")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@uses_database
def scheduler_reload(file: str | None) -> None:
    """Make FILE (default ~/.config/rbee/scheduler.rhai) the script in force on every queen,
    without a restart. A broken script is refused and the running one stays."""
    from django.conf import settings

    from inference.scheduler import ScriptError
    from inference.services import scheduler_script_store

    path = Path(file) if file else config_dir() / "scheduler.rhai"
    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        row = scheduler_script_store(
            source=path.read_text(), origin=str(path), actor=cli_actor(), reload=True
        )
    except ScriptError as exc:
        note(f"{path}:{exc}")
        note("refused: the running script stays in force")
        sys.exit(1)
    click.echo(
        f"scheduler v{row.pk} stored from {path}; every queen switches to it within "
        f"{settings.RBEE_SCHEDULER_CHECK_SECONDS:g} s"
    )
