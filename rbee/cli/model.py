"""`rbee model`: which models run on which hives, their downloads and their aliases."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import click

from rbee.cli._common import cli_actor, fail, note, reported, uses_database


@click.group()
def model() -> None:
    """Which models run on which hives."""


@model.command("add")
@click.argument("spec")
@click.option("--hive", "hive_name", required=True, help="The hive to run it on.")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, cuda:N, metal:N, rocm:N, or N (the hive's GPU number N).",
)
@click.option(
    "--pin",
    is_flag=True,
    help="Keep it loaded there, and bring it back there after a hive restart.",
)
@click.option(
    "--wait",
    default=0.0,
    type=float,
    help="Wait up to this many seconds for the hive to load it (or refuse it, saying why).",
)
@uses_database
def model_add(spec: str, hive_name: str, device: str, pin: bool, wait: float) -> None:
    """Run SPEC on a hive's device: a bundled id (smollm2-135m-instruct, whisper-base,
    piper-joe, all-minilm-l6-v2, tiny-sd, espeak-ng), a well-known name (llama-3-70b,
    llama-3-8b, sdxl, whisper-large, tts-1, ...) or NAME=ENGINE:SOURCE.

    The hive loads it within a heartbeat if it is connected, else when it connects; it
    refuses a model that does not fit the device's free memory and says what uses it."""
    from hives import services

    with reported(services.HiveError):
        a = services.assignment_add(
            hive_name=hive_name, spec=spec, device=device, pinned=pin, actor=cli_actor()
        )
    click.echo(f"{a.model_name} -> {hive_name}:{a.device}{' (pinned)' if a.pinned else ''}")
    if wait > 0:
        _wait_worker(hive_name, a.model_name, a.device, wait)


def _wait_worker(hive_name: str, model_name: str, device: str, timeout: float) -> None:
    """Follow the worker's state until it is ready (or refused: exit 1 saying why)."""
    from hives import models, selectors

    ready, refused = models.Worker.State.READY, models.Worker.State.REFUSED
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        w = selectors.worker_find(hive_name=hive_name, model_name=model_name, device=device)
        state = w.state if w is not None else "pending"
        if state != seen:
            seen = state
            note(f"  {model_name} on {hive_name}:{device}: {state}")
        if w is not None and w.state == ready:
            return
        if w is not None and w.state == refused:
            fail(w.message or "the hive refused the model")
        time.sleep(0.5)
    fail(f"{model_name} is not ready on {hive_name}:{device} after {timeout:g} s ({seen})")


@model.command("download")
@click.argument("source")
@click.option(
    "--hive",
    "hive_name",
    default=None,
    help="The hive that fetches it (it must be online; the download resumes if it restarts). "
    "Without --hive: fetch it here, into this machine's models directory.",
)
@click.option("--timeout", default=24 * 3600.0, type=float, help="Give up waiting after this.")
def model_download(source: str, hive_name: str | None, timeout: float) -> None:
    """Fetch SOURCE (a Hugging Face repo id, org/name[@revision]) with a progress bar and
    resume, or check a local path. Then: `rbee model add NAME=ENGINE:PATH --hive H`.

    HF_TOKEN (on the hive) reaches gated repos; HF_ENDPOINT points at a mirror."""
    if hive_name is None:
        _download_here(source)
    else:
        _download_on_hive(source, hive_name, timeout)


@uses_database
def _download_on_hive(source: str, hive_name: str, timeout: float) -> None:
    from hives import models, selectors, services

    with reported(services.HiveError):
        row = services.model_download_create(hive_name=hive_name, source=source, actor=cli_actor())
    status = models.ModelDownload.Status
    note(f"download {row.pk}: {source} on {hive_name}")
    finished = (status.DONE, status.FAILED)
    deadline = time.monotonic() + timeout
    shown = 0
    announced = ""
    with click.progressbar(length=1, label=source, file=sys.stderr) as bar:
        while time.monotonic() < deadline:
            row = selectors.model_download_get(download_id=row.pk) or row
            if row.status == status.QUEUED and not announced:
                announced = "queued"
                note(f"\nwaiting for hive {hive_name} to pick it up")
            if row.total_bytes and bar.length != row.total_bytes:
                bar.length = row.total_bytes
            if row.done_bytes > shown:
                bar.update(row.done_bytes - shown)
                shown = row.done_bytes
            if row.status in finished:
                break
            time.sleep(0.3)
    if row.status == status.FAILED:
        fail(row.message or "the download failed")
    if row.status != status.DONE:
        fail(f"the download is still {row.status} after {timeout:g} s")
    click.echo(row.path)


def _download_here(source: str) -> None:
    """Fetch SOURCE into this machine's models directory: no queen, no database."""
    from hives.agent import catalog, download

    with click.progressbar(length=1, label=source, file=sys.stderr) as bar:
        shown = 0

        async def progress(done: int, total: int) -> None:
            nonlocal shown
            if total and bar.length != total:
                bar.length = total
            bar.update(done - shown)
            shown = done

        with reported(download.DownloadError):
            path = asyncio.run(download.download(source, catalog.models_dir(), progress))
    click.echo(str(path))


@model.command("build-tiny-sd")
@click.argument("dest", required=False, type=click.Path(file_okay=False))
@click.option("--sdxl", is_flag=True, help="A tiny SDXL pipeline (two text encoders).")
def model_build_tiny_sd(dest: str | None, sdxl: bool) -> None:
    """Build the tiny image pipeline `rbee up` serves as tiny-sd (default: in the models
    directory). Its weights are random, so IT DRAWS NOISE: it exists so that a fresh
    machine, and the tests, run the real diffusers path without downloading gigabytes."""
    from hives.agent import catalog, tinysd

    target = Path(dest) if dest else catalog.models_dir() / ("tiny-sdxl" if sdxl else "tiny-sd")
    click.echo(tinysd.build_tiny_sd(target, "sdxl" if sdxl else "sd"))


@model.command("alias")
@click.argument("alias")
@click.argument("target")
@uses_database
def model_alias(alias: str, target: str) -> None:
    """Let requests for ALIAS reach the model TARGET (e.g. `rbee model alias tts-1
    piper-joe`, so clients that hard-code OpenAI's names work)."""
    from hives import services

    with reported(services.HiveError):
        services.model_alias_set(alias=alias, target=target, actor=cli_actor())
    click.echo(f"{alias} -> {target}")


@model.command("unalias")
@click.argument("alias")
@uses_database
def model_unalias(alias: str) -> None:
    """Remove the alias ALIAS."""
    from hives import services

    if not services.model_alias_remove(alias=alias, actor=cli_actor()):
        fail(f"no alias {alias!r}")
    click.echo(f"{alias} removed")


@model.command("rm")
@click.argument("name")
@click.option("--hive", "hive_name", required=True)
@uses_database
def model_rm(name: str, hive_name: str) -> None:
    """Stop running NAME on the hive (only what `rbee model add` put there)."""
    from hives import services

    if not services.assignment_remove(hive_name=hive_name, model_name=name, actor=cli_actor()):
        fail(f"{name} is not assigned to {hive_name}")
    click.echo(f"{name} removed from {hive_name}")


@model.command("list")
@uses_database
def model_list() -> None:
    """Models, where they are assigned and where they run."""
    from hives import selectors

    for a in selectors.assignment_list():
        pin = "pinned" if a.pinned else "-"
        click.echo(f"{a.model_name:28} {a.hive.name:16} {a.device:10} assigned {pin}")
    for w in selectors.worker_list(by="model"):
        line = f"{w.model.name:28} {w.hive.name:16} {w.device:10} {w.state}"
        click.echo(line + (f"  {w.message}" if w.message else ""))
    for alias in selectors.model_alias_list():
        click.echo(f"{alias.name:28} alias of {alias.model.name}")
