"""`rbee hive`: the machines that run models.

`rbee hive start` runs on GPU machines with no database: it imports the hive agent
(which imports no Django and no app), never the queen's side.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rbee.cli._common import (
    DEFAULT_HIVE_PORT,
    cli_actor,
    fail,
    log_to_console,
    reported,
    uses_database,
)

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def hive() -> None:
    """Machines that run models."""


@hive.command("start")
@click.option(
    "--queen",
    "queen_url",
    required=True,
    help="The queen, e.g. https://queen:7833 (http:// only on loopback or with --insecure).",
)
@click.option(
    "--token",
    envvar="RBEE_HIVE_TOKEN",
    required=True,
    help="The hive token from `rbee hive token` (or RBEE_HIVE_TOKEN).",
)
@click.option("--name", default=None, help="This hive's name (default: the host name).")
@click.option(
    "--region",
    default="",
    help="The region this hive says it is in, e.g. eu. Reported only: the queen routes by "
    "the operator's record (`rbee hive set NAME --region eu`).",
)
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
@click.option(
    "--allow-remote-code",
    is_flag=True,
    help="Load models whose spec asks trust_remote_code=true (runs Python from the model's "
    "repository). Without it such a model fails to load, with the reason.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow ws:// (or http://) to a queen that is not on this machine: the hive token and "
    "every prompt would cross the network in clear. Use wss:// (https://) instead.",
)
@click.option(
    "--ca",
    envvar="RBEE_HIVE_CA",
    default=None,
    metavar="FILE",
    help="Trust only the CA certificate(s) in FILE (PEM) for an https:// queen: a private "
    "or self-signed CA. Default: this machine's CAs. Or RBEE_HIVE_CA.",
)
@click.option(
    "--server-name",
    default=None,
    metavar="NAME",
    help="Check the queen's certificate for NAME instead of the URL's host (a queen "
    "reached by address, e.g. https://10.0.0.5:7833 with a certificate for queen.lan).",
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
    allow_remote_code: bool,
    insecure: bool,
    ca: str | None,
    server_name: str | None,
    status_host: str,
    status_port: int,
) -> None:
    """Run a hive: connect to the queen and serve models on this machine."""
    # The agent pulls in its engines' libraries: imported when a hive starts, not for --help.
    from hives.agent import agent, catalog, devices
    from hives.agent.engines.base import EngineError
    from kernel.tls import TLSFilesError, client_context

    log_to_console()
    try:
        url = agent.check_queen_url(queen_url, insecure=insecure)
    except ValueError as exc:
        fail(str(exc))
    if url.startswith("wss://"):
        try:
            client_context(ca)  # the CA file is read now: a mistake fails at start
        except TLSFilesError as exc:
            fail(str(exc))
    elif ca or server_name:
        fail(
            f"{'--ca' if ca else '--server-name'} is for a queen that serves TLS: its URL is "
            f"https://, not {queen_url}"
        )
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
        allow_remote_code=allow_remote_code,
        insecure=insecure,
        ca=ca,
        server_name=server_name,
    )
    sys.exit(asyncio.run(this_hive.run()))


@hive.command("token")
@click.option("--name", required=True, help="The hive's name.")
@click.option(
    "--trust-models/--no-trust-models",
    default=None,
    help="Let the models this hive is started with (`rbee hive start --model`) in without "
    "`rbee hive approve` for each. Default: as before (off for a new hive).",
)
@click.option("--region", default=None, help="The hive's region for residency rules, e.g. eu.")
@uses_database
def hive_token(name: str, trust_models: bool | None, region: str | None) -> None:
    """Create the hive NAME (or replace its token) and print its token once."""
    from hives import services

    with reported(services.HiveError):
        _, token = services.hive_token_create(
            name=name, trust_models=trust_models, region=region, actor=cli_actor()
        )
    click.echo(token)


@hive.command("list")
@uses_database
def hive_list() -> None:
    """List hives and what they serve, and the models they run that wait for approval."""
    from hives import selectors

    pending = list(selectors.pending_models())
    for h in selectors.hive_list_with_workers():
        models = ", ".join(f"{w.model.name}({w.state})" for w in h.workers.all()) or "-"
        status = "revoked" if h.token_revoked else "disabled" if h.disabled else h.status
        click.echo(f"{h.name:20} {status:8} {h.region or '-':6} {models}")
        for p in pending:
            if p.hive_id == h.pk:
                click.echo(
                    f"{'':20} pending  {p.model_name} ({p.reason}; "
                    f"`rbee hive approve {h.name} {p.model_name}`)"
                )


@hive.command("approve")
@click.argument("name")
@click.argument("model")
@click.option("--withdraw", is_flag=True, help="Take the approval back: no longer routed to.")
@uses_database
def hive_approve(name: str, model: str, withdraw: bool) -> None:
    """Let hive NAME serve MODEL, a model it runs that was not assigned to it."""
    from hives import services

    with reported(services.HiveError):
        services.model_approve(
            hive_name=name, model_name=model, approved=not withdraw, actor=cli_actor()
        )
    click.echo(f"{model} on {name}: {'withdrawn' if withdraw else 'approved'}")


@hive.command("set")
@click.argument("name")
@click.option("--region", default=None, help="The hive's region for residency rules.")
@click.option("--trust-models/--no-trust-models", default=None, help="See `rbee hive token`.")
@uses_database
def hive_set(name: str, region: str | None, trust_models: bool | None) -> None:
    """Edit the operator's record of hive NAME."""
    from hives import services

    with reported(services.HiveError):
        h = services.hive_update(
            name=name, region=region, trust_models=trust_models, actor=cli_actor()
        )
    click.echo(
        f"{h.name}: region {h.region or '-'}, trust models {'on' if h.trust_models else 'off'}"
    )


@hive.command("revoke")
@click.argument("name")
@uses_database
def hive_revoke(name: str) -> None:
    """Revoke hive NAME's token: its socket closes within a heartbeat, it cannot connect
    again until `rbee hive token --name NAME` gives it a new one."""
    from hives import services

    with reported(services.HiveError):
        services.hive_revoke(name=name, actor=cli_actor())
    click.echo(f"{name}: token revoked")


@hive.command("disable")
@click.argument("name")
@uses_database
def hive_disable(name: str) -> None:
    """Disable hive NAME: nothing is routed to it, its socket closes within a heartbeat
    and its reconnects are refused until `rbee hive enable NAME`."""
    from hives import services

    with reported(services.HiveError):
        services.hive_update(name=name, disabled=True, actor=cli_actor())
    click.echo(f"{name}: disabled")


@hive.command("enable")
@click.argument("name")
@uses_database
def hive_enable(name: str) -> None:
    """Enable hive NAME again (it reconnects on its own)."""
    from hives import services

    with reported(services.HiveError):
        services.hive_update(name=name, disabled=False, actor=cli_actor())
    click.echo(f"{name}: enabled")


# Over SSH: install, upgrade, status, uninstall (hives/install/) -------------------------


def _ssh_options(func: F) -> F:
    """The options every command that reaches a host over SSH takes."""
    func = click.option(
        "--config",
        "config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The hosts file (default: RBEE_CONFIG_DIR/hives.conf, ~/.config/rbee/hives.conf).",
    )(func)
    return click.option(
        "--accept-new-host-key",
        is_flag=True,
        help="Record the host's key in known_hosts when it is not there yet (check the "
        "fingerprint first). A changed key is always refused.",
    )(func)


def _install_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--extras",
                default=None,
                help="auto (by the host's hardware), none (a bare hive), or rbee's extras "
                "such as hive or cuda. Default: hives.conf's Extras, else auto.",
            ),
            click.option(
                "--queen",
                "queen_url",
                default=None,
                help="The URL the hive connects to. Default: hives.conf's QueenURL, else "
                "RBEE_PUBLIC_URL.",
            ),
            click.option(
                "--insecure",
                is_flag=True,
                help="Let the hive speak plain http:// to a queen on another machine (as "
                "hives.conf's `Insecure yes`): token and prompts cross the network in clear.",
            ),
            click.option(
                "--new-token",
                is_flag=True,
                help="Issue a new hive token (the old one stops working) instead of keeping "
                "the one the host has.",
            ),
            click.option(
                "--wait",
                default=120.0,
                show_default=True,
                type=float,
                help="Seconds to wait for the hive to connect to the queen.",
            ),
            click.option(
                "--wheel",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=None,
                help="Install this rbee wheel (it must be the queen's version) instead of "
                "the queen's own build or its version from the package index.",
            ),
        ]
    ):
        func = option(func)
    return _ssh_options(func)


def _run_over_ssh(step: Callable[..., Any], host: str, **options: Any) -> None:
    from hives.install import installer
    from hives.install.errors import InstallError

    opts = installer.Options(actor=cli_actor(), **options)
    with reported(InstallError):
        code = asyncio.run(step(host, opts, click.echo))
    sys.exit(code)


@hive.command("install")
@click.argument("host")
@_install_options
@uses_database
def hive_install(host: str, **options: Any) -> None:
    """Install a hive on HOST (a Host of hives.conf) over SSH and start it.

    The queen's own rbee goes into a virtualenv on the host with the extra its hardware
    needs, the hive token is handed over in a 0600 file, a systemd unit (or launchd plist,
    or rbee's fallback supervisor where no systemd runs) keeps it running, and the command
    returns once the hive is connected. Run it again to upgrade in place.
    """
    from hives.install import installer

    _run_over_ssh(installer.install, host, **options)


@hive.command("upgrade")
@click.argument("host")
@_install_options
@uses_database
def hive_upgrade(host: str, **options: Any) -> None:
    """Install the queen's current version on HOST, where a hive is installed already
    (its token is kept unless --new-token)."""
    from hives.install import installer

    async def upgrade(alias: str, opts: Any, out: Callable[[str], None]) -> int:
        return await installer.install(alias, opts, out, upgrade=True)

    _run_over_ssh(upgrade, host, **options)


@hive.command("status")
@click.argument("host")
@_ssh_options
@uses_database
def hive_status(host: str, **options: Any) -> None:
    """HOST's hive: its service and installed version (over SSH) and what the queen sees
    (connected, heartbeat age, devices, workers). Exit 1 unless it runs and is connected."""
    from hives.install import installer

    _run_over_ssh(installer.status, host, **options)


@hive.command("uninstall")
@click.argument("host")
@click.option(
    "--purge",
    is_flag=True,
    help="Remove the hive's whole data directory on the host, downloaded models included.",
)
@_ssh_options
@uses_database
def hive_uninstall(host: str, **options: Any) -> None:
    """Stop HOST's hive, remove its service, virtualenv, token file and logs (downloaded
    models stay unless --purge), and revoke its token on the queen."""
    from hives.install import installer

    _run_over_ssh(installer.uninstall, host, **options)
