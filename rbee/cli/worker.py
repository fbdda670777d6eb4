"""`rbee worker`: the processes that hold the models, one per model and device."""

from __future__ import annotations

import click

from hives.protocol import WorkerAction
from rbee.cli._common import cli_actor, reported, uses_database


@click.group()
def worker() -> None:
    """The worker processes that hold the models (one per model and device)."""


@worker.command("list")
@uses_database
def worker_list() -> None:
    """Every worker: its hive, device, state, memory and why it is not ready."""
    from hives import selectors

    for w in selectors.worker_list(by="hive"):
        mem = f"{w.memory_bytes / 2**30:.2f} GiB" if w.memory_bytes else "-"
        pin = "pinned" if w.pinned else "-"
        line = f"{w.hive.name:16} {w.device:8} {w.model.name:28} {w.state:9} {mem:>10} {pin}"
        click.echo(line + (f"  {w.message}" if w.message else ""))


def _order(action: str, model_name: str, hive_name: str, device: str | None) -> None:
    from hives import services

    with reported(services.HiveError):
        c = services.worker_command_create(
            hive_name=hive_name,
            model_name=model_name,
            device=device,
            action=action,
            actor=cli_actor(),
        )
    click.echo(f"{action} {model_name} on {hive_name}:{c.device}: sent with the next heartbeat")


@worker.command("start")
@click.argument("model_name")
@click.option("--hive", "hive_name", required=True)
@click.option("--device", default=None)
@uses_database
def worker_start(model_name: str, hive_name: str, device: str | None) -> None:
    """Load a stopped or unloaded worker again."""
    _order(WorkerAction.START, model_name, hive_name, device)


@worker.command("stop")
@click.argument("model_name")
@click.option("--hive", "hive_name", required=True)
@click.option("--device", default=None)
@uses_database
def worker_stop(model_name: str, hive_name: str, device: str | None) -> None:
    """Stop a worker and free its memory; it stays stopped until `rbee worker start`."""
    _order(WorkerAction.STOP, model_name, hive_name, device)


@worker.command("restart")
@click.argument("model_name")
@click.option("--hive", "hive_name", required=True)
@click.option("--device", default=None)
@uses_database
def worker_restart(model_name: str, hive_name: str, device: str | None) -> None:
    """Restart a worker's process (its in-flight jobs fail with a clear error)."""
    _order(WorkerAction.RESTART, model_name, hive_name, device)
