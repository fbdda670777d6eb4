"""`rbee hive`: the machines that run models.

`rbee hive start` runs on GPU machines with no database: it imports the hive agent
(which imports no Django and no app), never the queen's side.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import click

from rbee.cli._common import DEFAULT_HIVE_PORT, fail, log_to_console, reported, uses_database


@click.group()
def hive() -> None:
    """Machines that run models."""


@hive.command("start")
@click.option("--queen", "queen_url", required=True, help="The queen, e.g. http://queen:7833.")
@click.option(
    "--token",
    envvar="RBEE_HIVE_TOKEN",
    required=True,
    help="The hive token from `rbee hive token` (or RBEE_HIVE_TOKEN).",
)
@click.option("--name", default=None, help="This hive's name (default: the host name).")
@click.option("--region", default="", help="Region label for residency rules, e.g. eu.")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="A model to serve: a bundled id, or NAME=ENGINE:SOURCE. Repeatable. "
    "Default: the bundled SmolLM2 chat model.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Device for the models: cpu, cuda:N, metal:N.",
)
@click.option(
    "--inventory",
    default=None,
    metavar="FILE|NAME",
    help="Report the GPUs described in this JSON file, or a recorded machine by name "
    "(dgx-h100, dgx-a100, gaming-pc-rtx4090, mac-studio-m2-ultra, old-server-2x3090), instead "
    "of detecting them (demos, tests, scheduling dry runs); the engines still run here.",
)
@click.option(
    "--idle-unload",
    default=900.0,
    show_default=True,
    type=float,
    envvar="RBEE_IDLE_UNLOAD",
    help="Unload unpinned models idle this many seconds (0: never); they reload on the "
    "next request.",
)
@click.option("--status-host", default="127.0.0.1", show_default=True)
@click.option(
    "--status-port",
    default=DEFAULT_HIVE_PORT,
    show_default=True,
    type=int,
    help="Local status API port (HivePort); -1 to disable.",
)
def hive_start(
    queen_url: str,
    token: str,
    name: str | None,
    region: str,
    models: tuple[str, ...],
    device: str,
    inventory: str | None,
    idle_unload: float,
    status_host: str,
    status_port: int,
) -> None:
    """Run a hive: connect to the queen and serve models on this machine."""
    # The agent pulls in its engines' libraries: imported when a hive starts, not for --help.
    from hives.agent import agent, catalog, devices
    from hives.agent.engines.base import EngineError

    log_to_console()
    if inventory:
        from hives.agent.devices.inventory import load_inventory

        try:
            devices.use_inventory(load_inventory(inventory))
        except (KeyError, OSError, ValueError) as exc:
            fail(f"--inventory {inventory}: {exc.args[0] if exc.args else exc}")
    with reported(EngineError):
        specs = [
            catalog.parse_model_arg(m, device=device)
            for m in (models or (catalog.DEFAULT_CHAT_MODEL,))
        ]
    this_hive = agent.HiveAgent(
        queen=queen_url,
        token=token,
        name=name or socket.gethostname().split(".")[0].lower(),
        region=region,
        models=specs,
        status_host=status_host,
        status_port=None if status_port < 0 else status_port,
        idle_unload=idle_unload,
        recorded=bool(inventory),
    )
    sys.exit(asyncio.run(this_hive.run()))


@hive.command("token")
@click.option("--name", required=True, help="The hive's name.")
@uses_database
def hive_token(name: str) -> None:
    """Create the hive NAME (or replace its token) and print its token once."""
    from hives import services

    with reported(services.HiveError):
        _, token = services.hive_token_create(name=name)
    click.echo(token)


@hive.command("list")
@uses_database
def hive_list() -> None:
    """List hives and what they serve."""
    from hives import selectors

    for h in selectors.hive_list_with_workers():
        models = ", ".join(f"{w.model.name}({w.state})" for w in h.workers.all()) or "-"
        click.echo(f"{h.name:20} {h.status:8} {h.region or '-':6} {models}")
