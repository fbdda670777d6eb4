"""The `rbee` command line.

Queen-side commands (up, queen, tenant, key, hive token/list) use the database;
`rbee hive start` does not import Django at all, so it runs on GPU machines that
only have the hive extras installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from hives.protocol import WorkerAction
from kernel.logs import configure as configure_logging

DEFAULT_PORT = 7833
DEFAULT_HIVE_PORT = 7835


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")
    import django

    django.setup()


def _migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rbee")
def main() -> None:
    """rbee: every GPU and CPU you own as one OpenAI-compatible API (port 7833)."""


# --- queen ----------------------------------------------------------------------------


@main.group()
def queen() -> None:
    """The control plane: the OpenAI API, the hive endpoint, the admin."""


def serve_queen(host: str, port: int, *, migrate: bool = True) -> None:
    # The request path hands database work to executor threads and back; with
    # CPython's default 5 ms switch interval each handoff can wait that long for
    # the GIL while the event loop thread is busy.
    sys.setswitchinterval(float(os.environ.get("RBEE_GIL_SWITCH_INTERVAL", "0.0005")))
    _django()
    if migrate:
        _migrate()
    from channels.layers import get_channel_layer
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server
    from django.conf import settings

    from hives.services import hives_forget_connections
    from rbee.asgi import application
    from rbee.server import install_body_limit

    # The largest body any endpoint takes; each endpoint may answer 413 below it.
    install_body_limit(max(settings.RBEE_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE))

    if not settings.REDIS_URL:
        # One process owns every hive socket on the embedded default, so any
        # connection recorded now belongs to a previous run.
        hives_forget_connections()
        # No Celery beat here: billing's periodic tasks run on a thread of the queen.
        from billing.periodic import start_in_process

        start_in_process()
    logging.getLogger("rbee").info("queen listening on http://%s:%s", host, port)
    Server(
        application=application,
        endpoints=build_endpoint_description_strings(host=host, port=port),
        websocket_timeout=-1,  # hives stay connected for as long as they run
        application_close_timeout=10,
        verbosity=0,
    ).run()
    # Stopped (SIGTERM/SIGINT): the sockets this process held are gone, so other
    # replicas must stop routing to them now, not when their heartbeats go stale.
    marker = getattr(get_channel_layer(), "client_prefix", None)
    released = hives_forget_connections(channel_marker=marker) if marker else 0
    logging.getLogger("rbee").info("queen stopped; released %d hive connection(s)", released)


@queen.command("start")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--no-migrate", is_flag=True, help="Do not apply database migrations first.")
def queen_start(host: str, port: int, no_migrate: bool) -> None:
    """Start the queen (Daphne) on PORT."""
    configure_logging(os.environ.get("RBEE_LOG_LEVEL", "INFO"))
    serve_queen(host, port, migrate=not no_migrate)


@main.group("billing")
def billing_group() -> None:
    """Metering, invoices and Stripe."""


@billing_group.command("worker")
@click.option("--concurrency", default=2, show_default=True, type=int)
def billing_worker(concurrency: int) -> None:
    """Run Celery (with its beat) for background work: usage to Stripe, past-due
    suspensions, invoice drafts. Needed with RBEE_REDIS_URL; on the embedded default the
    queen does this work itself."""
    _django()
    from rbee.celery import app

    app.worker_main(["worker", "--beat", f"--concurrency={concurrency}", "--loglevel=INFO"])


# --- hives ------------------------------------------------------------------------------


@main.group()
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
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Report the GPUs described in this JSON file instead of detecting them "
    "(demos, tests, scheduling dry runs); the engines still run on this machine.",
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
    import socket

    from hives.agent.agent import HiveAgent
    from hives.agent.catalog import DEFAULT_CHAT_MODEL, parse_model_arg
    from hives.agent.devices import use_inventory
    from hives.agent.engines.base import EngineError

    configure_logging(os.environ.get("RBEE_LOG_LEVEL", "INFO"))
    if inventory:
        import json

        use_inventory(json.loads(Path(inventory).read_text()))
    try:
        specs = [parse_model_arg(m, device=device) for m in (models or (DEFAULT_CHAT_MODEL,))]
    except EngineError as exc:
        _fail(exc.message)
    agent = HiveAgent(
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
    sys.exit(asyncio.run(agent.run()))


@hive.command("token")
@click.option("--name", required=True, help="The hive's name.")
def hive_token(name: str) -> None:
    """Create the hive NAME (or replace its token) and print its token once."""
    _django()
    _migrate()
    from hives.services import HiveError, hive_token_create

    try:
        _, token = hive_token_create(name=name)
    except HiveError as exc:
        _fail(str(exc))
    click.echo(token)


@hive.command("list")
def hive_list() -> None:
    """List hives and what they serve."""
    _django()
    _migrate()
    from hives.selectors import hive_list as select_hives

    for h in select_hives().prefetch_related("workers__model"):
        models = ", ".join(f"{w.model.name}({w.state})" for w in h.workers.all()) or "-"
        click.echo(f"{h.name:20} {h.status:8} {h.region or '-':6} {models}")


# --- tenants and keys --------------------------------------------------------------------


@main.group()
def tenant() -> None:
    """Customers of this rbee."""


@tenant.command("create")
@click.argument("name")
@click.option("--tier", default="free", show_default=True)
@click.option("--plan", default=None, help="The plan (default: the plan named like the tier).")
def tenant_create(name: str, tier: str, plan: str | None) -> None:
    """Create the tenant NAME."""
    _django()
    _migrate()
    from tenants.errors import TenantError
    from tenants.services import tenant_create as create

    try:
        t = create(name=name, tier=tier, plan=plan)
    except TenantError as exc:
        _fail(exc.message)
    how = f"plan {t.plan.name}" if t.plan else f"tier {t.tier}, no plan: unlimited"
    click.echo(f"created tenant {t.name} ({how})", err=True)


@tenant.command("list")
def tenant_list() -> None:
    _django()
    _migrate()
    from tenants.selectors import tenant_list as select

    for t in select().select_related("plan"):
        plan = t.plan.name if t.plan else "-"
        click.echo(f"{t.name:24} {t.tier:12} {plan:12} {t.status}")


def _set_status(name: str, status: str) -> None:
    _django()
    _migrate()
    from tenants.services import tenant_set_status

    t = tenant_set_status(tenant=_tenant(name), status=status)
    click.echo(f"{t.name}: {t.status}", err=True)


@tenant.command("suspend")
@click.argument("name")
def tenant_suspend(name: str) -> None:
    """Suspend NAME: its keys stop working at once (401 account_deactivated)."""
    _set_status(name, "suspended")


@tenant.command("resume")
@click.argument("name")
def tenant_resume(name: str) -> None:
    """Make NAME active again."""
    _set_status(name, "active")


@tenant.command("plan")
@click.argument("name")
@click.argument("plan")
def tenant_plan(name: str, plan: str) -> None:
    """Move NAME to PLAN."""
    _django()
    _migrate()
    from tenants.errors import TenantError
    from tenants.services import tenant_set_plan

    try:
        t = tenant_set_plan(tenant=_tenant(name), plan_name=plan)
    except TenantError as exc:
        _fail(exc.message)
    click.echo(f"{t.name}: plan {plan}", err=True)


@tenant.command("limit")
@click.argument("name")
@click.argument("limits", nargs=-1, required=True)
def tenant_limit(name: str, limits: tuple[str, ...]) -> None:
    """Override single limits of NAME's plan: FIELD=N, FIELD=none (unlimited).
    E.g. `rbee tenant limit acme tokens_per_day=5000000 max_concurrent=8`."""
    _django()
    _migrate()
    from tenants.errors import TenantError
    from tenants.services import tenant_set_overrides

    try:
        t = tenant_set_overrides(tenant=_tenant(name), overrides=_limit_args(limits))
    except TenantError as exc:
        _fail(exc.message)
    click.echo(f"{t.name}: {t.overrides}", err=True)


def _limit_args(items: tuple[str, ...]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for item in items:
        field, sep, raw = item.partition("=")
        if not sep:
            _fail(f"bad limit {item!r}: expected FIELD=N or FIELD=none")
        if raw.lower() in ("none", "unlimited", ""):
            out[field] = None
        elif raw.isdigit():
            out[field] = int(raw)
        else:
            _fail(f"bad limit {item!r}: N must be a whole number")
    return out


# --- plans ---------------------------------------------------------------------------------


@main.group()
def plan() -> None:
    """Plans: allowed models, daily quotas, rates and concurrency."""


@plan.command("list")
def plan_list() -> None:
    _django()
    _migrate()
    from tenants.models import Plan

    for p in Plan.objects.order_by("name"):
        limits = ", ".join(
            f"{f}={getattr(p, f)}" for f in Plan.LIMIT_FIELDS if getattr(p, f) is not None
        )
        models = ",".join(p.allowed_models) if p.allowed_models else "all models"
        click.echo(f"{p.name:12} {models:24} {limits or 'unlimited'}")


@plan.command("defaults")
def plan_defaults() -> None:
    """Create the free, pro and enterprise plans (existing ones are left as they are)."""
    _django()
    _migrate()
    from billing.services import plan_get_or_create_defaults

    for name in plan_get_or_create_defaults():
        click.echo(name)


@plan.command("set")
@click.argument("name")
@click.argument("limits", nargs=-1)
@click.option("--models", default=None, help="Allowed models, comma-separated ('' for all).")
def plan_set(name: str, limits: tuple[str, ...], models: str | None) -> None:
    """Create or change the plan NAME: FIELD=N or FIELD=none for each limit
    (requests_per_day, tokens_per_day, images_per_day, audio_seconds_per_day,
    characters_per_day, requests_per_minute, tokens_per_minute, max_concurrent)."""
    _django()
    _migrate()
    from django.db import transaction

    from tenants.models import Plan

    values = _limit_args(limits)
    unknown = sorted(set(values) - set(Plan.LIMIT_FIELDS))
    if unknown:
        _fail(f"unknown limit {', '.join(unknown)}: use {', '.join(Plan.LIMIT_FIELDS)}")
    with transaction.atomic():
        p, created = Plan.objects.get_or_create(name=name)
        for field, value in values.items():
            setattr(p, field, value)
        if models is not None:
            p.allowed_models = [m.strip() for m in models.split(",") if m.strip()]
        p.save()
    click.echo(f"{'created' if created else 'updated'} plan {p.name}", err=True)


@main.group()
def key() -> None:
    """API keys."""


def _tenant(name: str) -> Any:
    """The tenant called `name`, or exit with a clear error."""
    from tenants.errors import TenantError
    from tenants.selectors import tenant_get

    try:
        return tenant_get(name=name)
    except TenantError as exc:
        _fail(exc.message)


@key.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--name", default="", help="A label for the key.")
@click.option(
    "--endpoints",
    default="",
    help="Only these endpoints (comma-separated: chat,completions,embeddings,images,audio).",
)
@click.option("--models", default="", help="Only these models (comma-separated).")
@click.option("--expires-in", default="", help="Expire after this long: 90d, 12h, 30m.")
def key_create(tenant_name: str, name: str, endpoints: str, models: str, expires_in: str) -> None:
    """Create an API key; prints only the key, so scripts can capture it."""
    _django()
    _migrate()
    from django.utils import timezone

    from tenants.errors import TenantError
    from tenants.services import api_key_create

    scopes = {
        "endpoints": [e.strip() for e in endpoints.split(",") if e.strip()],
        "models": [m.strip() for m in models.split(",") if m.strip()],
    }
    expires = timezone.now() + _duration(expires_in) if expires_in else None
    try:
        _, plaintext = api_key_create(
            tenant=_tenant(tenant_name), name=name, scopes=scopes, expires_at=expires
        )
    except TenantError as exc:
        _fail(exc.message)
    click.echo(plaintext)


def _duration(text: str) -> Any:
    from datetime import timedelta

    m = re.fullmatch(r"(\d+)([dhms])", text.strip())
    if m is None:
        _fail(f"bad duration {text!r}: use e.g. 90d, 12h, 30m, 45s")
        raise AssertionError  # unreachable: _fail exits
    unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


@key.command("rotate")
@click.argument("key_or_prefix")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--grace", default="24h", show_default=True, help="How long the old key works.")
def key_rotate(key_or_prefix: str, tenant_name: str, grace: str) -> None:
    """Replace a key: prints the new one; the old one keeps working for --grace."""
    _django()
    _migrate()
    from kernel import secrets
    from tenants.errors import TenantError
    from tenants.models import ApiKey
    from tenants.selectors import api_key_get
    from tenants.services import api_key_rotate

    prefix = secrets.parse_prefix(ApiKey.KIND, key_or_prefix) or key_or_prefix
    try:
        old = api_key_get(tenant=_tenant(tenant_name), prefix=prefix)
        _, plaintext = api_key_rotate(api_key=old, grace=_duration(grace))
    except TenantError as exc:
        _fail(exc.message)
    click.echo(plaintext)
    click.echo(f"{old.display} keeps working until {old.expires_at:%Y-%m-%d %H:%M} UTC", err=True)


@key.command("list")
@click.option("--tenant", "tenant_name", required=True)
def key_list(tenant_name: str) -> None:
    _django()
    _migrate()
    from tenants.selectors import api_key_list

    for k in api_key_list(tenant=_tenant(tenant_name)):
        state = "revoked" if k.revoked_at else "active"
        click.echo(f"{k.prefix}  {state:8} {k.name or '-':20} created {k.created_at:%Y-%m-%d}")


@key.command("revoke")
@click.argument("key_or_prefix")
@click.option("--tenant", "tenant_name", required=True)
def key_revoke(key_or_prefix: str, tenant_name: str) -> None:
    """Revoke a key, given the key itself or its prefix (from `rbee key list`)."""
    _django()
    _migrate()
    from kernel import secrets
    from tenants.errors import TenantError
    from tenants.models import ApiKey
    from tenants.selectors import api_key_get
    from tenants.services import api_key_revoke

    prefix = secrets.parse_prefix(ApiKey.KIND, key_or_prefix) or key_or_prefix
    try:
        k = api_key_get(tenant=_tenant(tenant_name), prefix=prefix)
    except TenantError as exc:
        _fail(exc.message)
    api_key_revoke(api_key=k)
    click.echo(f"revoked {k.display}", err=True)


# --- models on hives ------------------------------------------------------------------


@main.group()
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
def model_add(spec: str, hive_name: str, device: str, pin: bool, wait: float) -> None:
    """Run SPEC on a hive's device: a bundled id (smollm2-135m-instruct, whisper-base,
    piper-joe, all-minilm-l6-v2, tiny-sd, espeak-ng), a well-known name (llama-3-70b,
    llama-3-8b, sdxl, whisper-large, tts-1, ...) or NAME=ENGINE:SOURCE.

    The hive loads it within a heartbeat if it is connected, else when it connects; it
    refuses a model that does not fit the device's free memory and says what uses it."""
    _django()
    _migrate()
    from hives.services import HiveError, assignment_add

    try:
        a = assignment_add(hive_name=hive_name, spec=spec, device=device, pinned=pin)
    except HiveError as exc:
        _fail(str(exc))
    click.echo(f"{a.model_name} -> {hive_name}:{a.device}{' (pinned)' if a.pinned else ''}")
    if wait > 0:
        _wait_worker(hive_name, a.model_name, a.device, wait)


def _wait_worker(hive_name: str, model_name: str, device: str, timeout: float) -> None:
    from hives.models import Worker

    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        w = Worker.objects.filter(
            hive__name=hive_name, model__name=model_name, device=device
        ).first()
        state = w.state if w is not None else "pending"
        if state != seen:
            seen = state
            click.echo(f"  {model_name} on {hive_name}:{device}: {state}", err=True)
        if w is not None and w.state == Worker.State.READY:
            return
        if w is not None and w.state == Worker.State.REFUSED:
            _fail(w.message or "the hive refused the model")
        time.sleep(0.5)
    _fail(f"{model_name} is not ready on {hive_name}:{device} after {timeout:g} s ({seen})")


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
        return
    _django()
    _migrate()
    from hives.models import ModelDownload
    from hives.services import HiveError, model_download_create

    try:
        row = model_download_create(hive_name=hive_name, source=source)
    except HiveError as exc:
        _fail(str(exc))
    click.echo(f"download {row.pk}: {source} on {hive_name}", err=True)
    deadline = time.monotonic() + timeout
    shown = 0
    announced = ""
    with click.progressbar(length=1, label=source, file=sys.stderr) as bar:
        while time.monotonic() < deadline:
            row.refresh_from_db()
            if row.status == ModelDownload.Status.QUEUED and not announced:
                announced = "queued"
                click.echo(f"\nwaiting for hive {hive_name} to pick it up", err=True)
            if row.total_bytes and bar.length != row.total_bytes:
                bar.length = row.total_bytes
            if row.done_bytes > shown:
                bar.update(row.done_bytes - shown)
                shown = row.done_bytes
            if row.status in (ModelDownload.Status.DONE, ModelDownload.Status.FAILED):
                break
            time.sleep(0.3)
    if row.status == ModelDownload.Status.FAILED:
        _fail(row.message or "the download failed")
    if row.status != ModelDownload.Status.DONE:
        _fail(f"the download is still {row.status} after {timeout:g} s")
    click.echo(row.path)


def _download_here(source: str) -> None:
    import asyncio

    from hives.agent.catalog import models_dir
    from hives.agent.download import DownloadError, download

    with click.progressbar(length=1, label=source, file=sys.stderr) as bar:
        shown = 0

        async def progress(done: int, total: int) -> None:
            nonlocal shown
            if total and bar.length != total:
                bar.length = total
            bar.update(done - shown)
            shown = done

        try:
            path = asyncio.run(download(source, models_dir(), progress))
        except DownloadError as exc:
            _fail(str(exc))
    click.echo(str(path))


@model.command("build-tiny-sd")
@click.argument("dest", required=False, type=click.Path(file_okay=False))
@click.option("--sdxl", is_flag=True, help="A tiny SDXL pipeline (two text encoders).")
def model_build_tiny_sd(dest: str | None, sdxl: bool) -> None:
    """Build the tiny image pipeline `rbee up` serves as tiny-sd (default: in the models
    directory). Its weights are random, so IT DRAWS NOISE: it exists so that a fresh
    machine, and the tests, run the real diffusers path without downloading gigabytes."""
    from hives.agent.catalog import models_dir
    from hives.agent.tinysd import build_tiny_sd

    target = Path(dest) if dest else models_dir() / ("tiny-sdxl" if sdxl else "tiny-sd")
    click.echo(build_tiny_sd(target, "sdxl" if sdxl else "sd"))


@model.command("alias")
@click.argument("alias")
@click.argument("target")
def model_alias(alias: str, target: str) -> None:
    """Let requests for ALIAS reach the model TARGET (e.g. `rbee model alias tts-1
    piper-joe`, so clients that hard-code OpenAI's names work)."""
    _django()
    _migrate()
    from hives.services import HiveError, model_alias_set

    try:
        model_alias_set(alias=alias, target=target)
    except HiveError as exc:
        _fail(str(exc))
    click.echo(f"{alias} -> {target}")


@model.command("unalias")
@click.argument("alias")
def model_unalias(alias: str) -> None:
    """Remove the alias ALIAS."""
    _django()
    _migrate()
    from hives.services import model_alias_remove

    if not model_alias_remove(alias=alias):
        _fail(f"no alias {alias!r}")
    click.echo(f"{alias} removed")


# --- workers -----------------------------------------------------------------------------


@main.group()
def worker() -> None:
    """The worker processes that hold the models (one per model and device)."""


@worker.command("list")
def worker_list() -> None:
    """Every worker: its hive, device, state, memory and why it is not ready."""
    _django()
    _migrate()
    from hives.models import Worker

    for w in Worker.objects.select_related("hive", "model").order_by("hive__name", "device"):
        mem = f"{w.memory_bytes / 2**30:.2f} GiB" if w.memory_bytes else "-"
        pin = "pinned" if w.pinned else "-"
        line = f"{w.hive.name:16} {w.device:8} {w.model.name:28} {w.state:9} {mem:>10} {pin}"
        click.echo(line + (f"  {w.message}" if w.message else ""))


def _worker_action(action: str, model_name: str, hive_name: str, device: str | None) -> None:
    _django()
    _migrate()
    from hives.services import HiveError, worker_command_create

    try:
        c = worker_command_create(
            hive_name=hive_name, model_name=model_name, device=device, action=action
        )
    except HiveError as exc:
        _fail(str(exc))
    click.echo(f"{action} {model_name} on {hive_name}:{c.device}: sent with the next heartbeat")


@worker.command("start")
@click.argument("model_name")
@click.option("--hive", "hive_name", required=True)
@click.option("--device", default=None)
def worker_start(model_name: str, hive_name: str, device: str | None) -> None:
    """Load a stopped or unloaded worker again."""
    _worker_action(WorkerAction.START, model_name, hive_name, device)


@worker.command("stop")
@click.argument("model_name")
@click.option("--hive", "hive_name", required=True)
@click.option("--device", default=None)
def worker_stop(model_name: str, hive_name: str, device: str | None) -> None:
    """Stop a worker and free its memory; it stays stopped until `rbee worker start`."""
    _worker_action(WorkerAction.STOP, model_name, hive_name, device)


@worker.command("restart")
@click.argument("model_name")
@click.option("--hive", "hive_name", required=True)
@click.option("--device", default=None)
def worker_restart(model_name: str, hive_name: str, device: str | None) -> None:
    """Restart a worker's process (its in-flight jobs fail with a clear error)."""
    _worker_action(WorkerAction.RESTART, model_name, hive_name, device)


@model.command("rm")
@click.argument("name")
@click.option("--hive", "hive_name", required=True)
def model_rm(name: str, hive_name: str) -> None:
    """Stop running NAME on the hive (only what `rbee model add` put there)."""
    _django()
    _migrate()
    from hives.services import assignment_remove

    if not assignment_remove(hive_name=hive_name, model_name=name):
        _fail(f"{name} is not assigned to {hive_name}")
    click.echo(f"{name} removed from {hive_name}")


@model.command("list")
def model_list() -> None:
    """Models, where they are assigned and where they run."""
    _django()
    _migrate()
    from hives.models import Assignment, Worker

    for a in Assignment.objects.select_related("hive").order_by("model_name", "hive__name"):
        pin = "pinned" if a.pinned else "-"
        click.echo(f"{a.model_name:28} {a.hive.name:16} {a.device:10} assigned {pin}")
    for w in Worker.objects.select_related("hive", "model").order_by("model__name"):
        line = f"{w.model.name:28} {w.hive.name:16} {w.device:10} {w.state}"
        click.echo(line + (f"  {w.message}" if w.message else ""))
    from hives.models import ModelAlias

    for alias in ModelAlias.objects.select_related("model").order_by("name"):
        click.echo(f"{alias.name:28} alias of {alias.model.name}")


# --- the scheduler script -------------------------------------------------------------


@main.group()
def scheduler() -> None:
    """The Rhai script that admits and routes every request."""


def _script_path(file: str | None) -> Path:
    from kernel.paths import config_dir

    return Path(file) if file else config_dir() / "scheduler.rhai"


@scheduler.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def scheduler_check(file: str) -> None:
    """Compile FILE and dry-run it against sample tasks; exit 1 with line:col on error."""
    _django()  # no database is touched
    from inference.scheduler import Policy, ScriptError, dry_run

    path = Path(file)
    if not path.is_file():
        _fail(f"{file}: no such file")
    try:
        policy = Policy(path.read_text())
    except ScriptError as exc:
        click.echo(f"{file}:{exc}", err=True)
        sys.exit(1)
    for line in dry_run(policy):
        click.echo(line)
    if policy.errors:
        for err in dict.fromkeys(policy.errors):  # each distinct error once
            click.echo(f"{file}:{err}", err=True)
        sys.exit(1)
    click.echo(f"{file}: ok", err=True)


@scheduler.command("reload")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
def scheduler_reload(file: str | None) -> None:
    """Make FILE (default ~/.config/rbee/scheduler.rhai) the script in force on every queen,
    without a restart. A broken script is refused and the running one stays."""
    _django()
    _migrate()
    from django.conf import settings

    from inference.scheduler import ScriptError
    from inference.services import scheduler_script_store

    path = _script_path(file)
    if not path.is_file():
        _fail(f"{path}: no such file")
    try:
        row = scheduler_script_store(source=path.read_text(), origin=str(path))
    except ScriptError as exc:
        click.echo(f"{path}:{exc}", err=True)
        click.echo("refused: the running script stays in force", err=True)
        sys.exit(1)
    click.echo(
        f"scheduler v{row.pk} stored from {path}; every queen switches to it within "
        f"{settings.RBEE_SCHEDULER_CHECK_SECONDS:g} s"
    )


# --- up: everything on this machine ------------------------------------------------------


def _default_key_file() -> Path:
    from kernel.paths import rbee_home

    return rbee_home() / "default-api-key"


def _ensure_default_key() -> str:
    """The `default` tenant's key for this machine, kept (mode 0600) in RBEE_HOME.

    The queen stores only its hash; this file is the owner's copy, like an ssh key.
    """
    from tenants.selectors import KeyRejected, caller_from_key
    from tenants.services import api_key_create, tenant_get_or_create

    t, _ = tenant_get_or_create(name="default")
    path = _default_key_file()
    if path.exists():
        existing = path.read_text().strip()
        try:
            caller_from_key(existing)
            return existing
        except KeyRejected:
            pass
    _, plaintext = api_key_create(tenant=t, name="rbee up")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(plaintext + "\n")
    return plaintext


def _wait_ready(
    port: int, procs: list[subprocess.Popen[bytes]], model: str, timeout: float
) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            body: dict[str, Any] = r.json()
            if r.status_code == 200 and any(model in h.get("models", []) for h in body["hives"]):
                return True
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    return False


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option(
    "--model", "models", multiple=True, help="Models for the local hive (see hive start)."
)
@click.option(
    "--open",
    "open_",
    is_flag=True,
    help="Accept requests without an API key (as the default tenant); loopback only.",
)
def up(host: str, port: int, models: tuple[str, ...], open_: bool) -> None:
    """Run rbee on this machine: the queen plus a local hive. Ctrl-C stops both."""
    if open_ and host not in ("127.0.0.1", "localhost", "::1"):
        _fail("--open serves requests without a key, so it only binds to loopback")
    _django()
    _migrate()
    from hives.agent.catalog import BUNDLED, DEFAULT_MODELS, OPENAI_ALIASES
    from hives.services import HiveError, hive_token_create, model_alias_set

    api_key = _ensure_default_key()
    if not models:
        # Every modality out of the box, and OpenAI's model names pointing at them
        # (unless the owner already pointed a name elsewhere).
        models = tuple(DEFAULT_MODELS)
        for alias, target in OPENAI_ALIASES.items():
            try:
                model_alias_set(
                    alias=alias,
                    target=target,
                    capability=BUNDLED[target]["capability"],
                    engine=BUNDLED[target]["engine"],
                    keep=True,
                )
            except HiveError:
                pass
    _, hive_tok = hive_token_create(name="local")
    exe = [sys.executable, "-m", "rbee.cli"]
    env = {**os.environ, "RBEE_HIVE_TOKEN": hive_tok}  # not on argv, where `ps` shows it
    if open_:
        env["RBEE_ANONYMOUS_TENANT"] = "default"
    queen_p = subprocess.Popen(
        [*exe, "queen", "start", "--host", host, "--port", str(port), "--no-migrate"], env=env
    )
    hive_args = [*exe, "hive", "start", "--queen", f"http://127.0.0.1:{port}", "--name", "local"]
    for m in models:
        hive_args += ["--model", m]
    hive_p = subprocess.Popen(hive_args, env=env)
    procs = [queen_p, hive_p]
    first_model = models[0].split("=")[0].split("@")[0]

    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    code = 0
    if _wait_ready(port, procs, first_model, timeout=180):
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        click.echo(
            f"\nrbee is up: http://{shown}:{port}/v1  (model: {first_model})\n"
            f"API key: {api_key}\n\n"
            f"  curl http://{shown}:{port}/v1/chat/completions \\\n"
            f"    -H 'Authorization: Bearer {api_key}' -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"model": "{first_model}", "messages": '
            f'[{{"role": "user", "content": "Hello!"}}]}}\'\n\n'
            f"Models (loading in the background): {', '.join(models)}\n"
            "Press Ctrl-C to stop.\n",
        )
    elif not stopping:
        click.echo("error: rbee did not become ready; see the messages above", err=True)
        stopping, code = True, 1
    while not stopping:
        if any(p.poll() is not None for p in procs):
            click.echo("error: a part of rbee stopped unexpectedly; shutting down", err=True)
            code = 1
            break
        time.sleep(0.2)
    for p in (hive_p, queen_p):  # the hive first, so it leaves the queen cleanly
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
