"""Reads for hives, their workers and the model catalog."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db.models import Max, QuerySet
from django.utils import timezone

from hives.models import (
    Assignment,
    CatalogModel,
    DeviceSample,
    Hive,
    ModelAlias,
    ModelApproval,
    ModelDownload,
    Worker,
)
from hives.protocol import Capability, WorkerState
from hives.spec import Device, SpecError
from kernel import secrets
from kernel.sql import EpochBucket


@dataclass(frozen=True)
class Placement:
    """A worker that can take a job now, and the channel that reaches its hive."""

    worker_id: int
    hive_id: int
    hive_name: str
    channel_name: str
    device: str
    inflight: int
    region: str = ""
    gpu_type: str = "CPU"
    vram_free_mb: int = 0
    vram_total_mb: int = 0
    capability: str = Capability.TEXT_GEN
    pinned: bool = False
    model: str = ""
    slots: int = 1
    state: str = WorkerState.READY


def hive_for_token(plaintext: str) -> Hive | None:
    prefix = secrets.parse_prefix(Hive.TOKEN_KIND, plaintext)
    hive = Hive.objects.filter(token_prefix=prefix).first() if prefix else None
    if hive is None or hive.token_revoked:
        secrets.matches(plaintext, secrets.digest("none"))
        return None
    return hive if secrets.matches(plaintext, hive.token_hash) else None


def _fresh_after() -> object:
    return timezone.now() - timedelta(seconds=settings.RBEE_HIVE_STALE_AFTER)


def live_hives() -> QuerySet[Hive]:
    """Hives a job may go to: connected, heard from lately, enabled, token not revoked."""
    return Hive.objects.filter(
        status=Hive.Status.ONLINE,
        last_seen_at__gte=_fresh_after(),
        disabled=False,
        token_revoked=False,
    ).exclude(channel_name="")


def hive_socket_held(*, hive_id: int, channel_name: str) -> bool:
    """Whether the socket `channel_name` still holds hive `hive_id`: the hive is live
    (live_hives) and connected through that very socket. False once the hive reconnected
    through another (another queen process's consumer took it), went offline, or went
    stale (the queen process holding the socket died, so no heartbeat is recorded)."""
    return live_hives().filter(pk=hive_id, channel_name=channel_name).exists()


def hive_list() -> QuerySet[Hive]:
    return Hive.objects.order_by("name")


HIVE_STATES = ("online", "stale", "offline", "disabled", "revoked")


def hive_state(
    *,
    status: str,
    channel_name: str,
    disabled: bool,
    token_revoked: bool,
    last_seen_at: datetime | None,
    now: datetime,
) -> str:
    """A hive's state as operators see it (one of HIVE_STATES): revoked or disabled by an
    operator; offline (no socket); stale (a socket, but no heartbeat for
    RBEE_HIVE_STALE_AFTER: jobs are not sent to it); online."""
    if token_revoked:
        return "revoked"
    if disabled:
        return "disabled"
    if status != Hive.Status.ONLINE or not channel_name:
        return "offline"
    if last_seen_at is None or now - last_seen_at > timedelta(
        seconds=settings.RBEE_HIVE_STALE_AFTER
    ):
        return "stale"
    return "online"


@dataclass(frozen=True)
class FleetHive:
    """A hive as the metrics show it (hives.selectors.fleet_metrics)."""

    name: str
    region: str
    version: str
    state: str  # HIVE_STATES
    connected: bool  # a queen holds its socket (online or stale)
    last_seen_at: datetime | None
    devices: list[dict[str, Any]]


@dataclass(frozen=True)
class FleetWorker:
    hive: str
    device: str
    model: str
    state: str
    memory_bytes: int


def fleet_metrics(*, now: datetime | None = None) -> tuple[list[FleetHive], list[FleetWorker]]:
    """Every hive with its state and devices, and the workers of the hives a queen holds
    a socket of (what their hive reported last): two queries, no model instances."""
    now = now or timezone.now()
    hives: list[FleetHive] = []
    connected: dict[int, str] = {}
    for (
        pk,
        name,
        region,
        version,
        status,
        channel,
        disabled,
        revoked,
        seen,
        devices,
    ) in Hive.objects.order_by("name").values_list(
        "pk",
        "name",
        "region",
        "version",
        "status",
        "channel_name",
        "disabled",
        "token_revoked",
        "last_seen_at",
        "devices",
    ):
        state = hive_state(
            status=status,
            channel_name=channel,
            disabled=disabled,
            token_revoked=revoked,
            last_seen_at=seen,
            now=now,
        )
        is_connected = state in ("online", "stale")
        if is_connected:
            connected[pk] = name
        hives.append(
            FleetHive(
                name=name,
                region=region,
                version=version,
                state=state,
                connected=is_connected,
                last_seen_at=seen,
                devices=devices if isinstance(devices, list) else [],
            )
        )
    rows = (
        Worker.objects.filter(
            hive__status=Hive.Status.ONLINE, hive__disabled=False, hive__token_revoked=False
        )
        .exclude(hive__channel_name="")
        .order_by("hive_id", "device", "model__name")
        .values_list("hive_id", "device", "model__name", "state", "memory_bytes")
    )
    workers = [
        FleetWorker(
            hive=connected[hive_id],
            device=device,
            model=model,
            state=state,
            memory_bytes=memory,
        )
        for hive_id, device, model, state, memory in rows
        if hive_id in connected  # not a hive that connected between the two reads
    ]
    return hives, workers


def catalog_names() -> list[str]:
    """Every catalog model's name."""
    return list(CatalogModel.objects.order_by("name").values_list("name", flat=True))


# Workers a job can be sent to: loaded, loading (the request waits in its model's queue
# until one is ready: inference/queueing.py), or unloaded while idle or on its way there
# (reloaded on demand). /v1/models lists a model with any of them on a live hive.
SERVABLE = (
    WorkerState.READY,
    WorkerState.STARTING,
    WorkerState.UNLOADED,
    WorkerState.STOPPING,
)
_PREFERENCE = (WorkerState.READY, WorkerState.STARTING)


def prefer_loaded(placements: list[Placement]) -> list[Placement]:
    """Loaded workers if there are any, else loading ones, else the unloaded: a model is
    not loaded a second time while a copy is up (apply after other filters, e.g. region)."""
    for state in _PREFERENCE:
        found = [p for p in placements if p.state == state]
        if found:
            return found
    return placements


def loading_only(placements: list[Placement]) -> bool:
    """Whether every one of these workers is still loading (`starting`): a request for
    them waits in its model's queue until one is ready (inference/queueing.py)."""
    return bool(placements) and all(p.state == WorkerState.STARTING for p in placements)


# A worker in one of these states will not serve until someone acts (more memory, an
# operator's restart): the reason it carries is what a waiting request is told.
_UNSERVED = (WorkerState.REFUSED, WorkerState.FAILED)


def worker_problems(*, model: CatalogModel, limit: int = 8) -> list[str]:
    """Why the model's workers on live hives do not serve it: "hive/device state: reason"
    for each refused or failed one (the memory planner's message, the load error).
    They name hives and what else uses their memory: for operators' eyes only."""
    rows = (
        Worker.objects.filter(model=model, state__in=_UNSERVED, hive__in=live_hives())
        .select_related("hive")
        .order_by("hive__name", "device")[:limit]
    )
    return [f"{w.hive.name}/{w.device} {w.state}: {w.message or 'no reason given'}" for w in rows]


def catalog_model_get(*, name: str) -> CatalogModel | None:
    """The model by its name, or by one of its aliases."""
    model = CatalogModel.objects.filter(name=name).first()
    if model is None:
        alias = ModelAlias.objects.filter(name=name).select_related("model").first()
        model = alias.model if alias is not None else None
    return model


def default_model_for(*, capability: str) -> CatalogModel | None:
    """The model a request that names none gets (OpenAI's image API allows that)."""
    row = (
        Worker.objects.filter(
            state__in=SERVABLE, hive__in=live_hives(), model__capability=capability
        )
        .select_related("model")
        .order_by("model__name")
        .first()
    )
    return row.model if row is not None else None


@dataclass
class Served:
    model: CatalogModel
    hives: list[str]
    placements: list[dict[str, Any]]
    aliases: list[str]


def served_models() -> list[Served]:
    """Models with a servable worker on a live hive, where each runs, and their aliases."""
    rows = (
        Worker.objects.filter(state__in=SERVABLE, hive__in=live_hives())
        .select_related("model", "hive")
        .order_by("model__name", "hive__name", "device")
    )
    out: dict[str, Served] = {}
    for w in rows:
        entry = out.setdefault(w.model.name, Served(w.model, [], [], []))
        if w.hive.name not in entry.hives:
            entry.hives.append(w.hive.name)
        dev = _device_of(list(w.hive.devices or []), w.device)
        entry.placements.append(
            {
                "hive": w.hive.name,
                "device": w.device,
                "gpu_type": str(dev.get("gpu_type") or "CPU"),
                "state": w.state,
                "pinned": w.pinned,
                "memory_bytes": w.memory_bytes,
            }
        )
    for a in ModelAlias.objects.filter(model__name__in=list(out)).select_related("model"):
        out[a.model.name].aliases.append(a.name)
    return list(out.values())


def _device_of(devices: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """The hive's device entry for a worker's device string ('cpu', 'cuda:1', 'metal:0')."""
    try:
        where = Device(device)
    except SpecError:
        return {}
    return next((d for d in devices if where.describes(d)), {})


def placements_for_model(
    *, model: CatalogModel, exclude_hive_ids: set[int] | None = None
) -> list[Placement]:
    rows = (
        Worker.objects.filter(model=model, state__in=SERVABLE, hive__in=live_hives())
        .select_related("hive")
        .only(
            "id",
            "device",
            "state",
            "inflight",
            "slots",
            "pinned",
            "hive__id",
            "hive__name",
            "hive__channel_name",
            "hive__region",
            "hive__devices",
        )
    )
    out = []
    for w in rows:
        if exclude_hive_ids and w.hive.id in exclude_hive_ids:
            continue
        dev = _device_of(list(w.hive.devices or []), w.device)
        out.append(
            Placement(
                worker_id=w.id,
                hive_id=w.hive.id,
                hive_name=w.hive.name,
                channel_name=w.hive.channel_name,
                device=w.device,
                inflight=w.inflight,
                region=w.hive.region,
                gpu_type=str(dev.get("gpu_type") or "CPU"),
                vram_free_mb=int(dev.get("memory_free_mb") or 0),
                vram_total_mb=int(dev.get("memory_total_mb") or 0),
                capability=model.capability,
                pinned=w.pinned,
                model=model.name,
                slots=max(1, w.slots),
                state=w.state,
            )
        )
    return out


# --- models and their placements, kept in memory ----------------------------------------
#
# Every /v1 request looks up its model and the workers that serve it. Each process keeps
# what it read per model name, tagged with the generation of FLEET it read before reading
# (kernel/generations.py); any change to hives, workers, models or aliases bumps it
# (hives.services.fleet_changed; hives/apps.py for saves and deletes). A hive goes stale
# by time alone (no write: it stopped sending heartbeats), so an entry is also used for
# at most FLEET_CACHE_MAX_AGE_S. A placement that went away meanwhile is what dispatch
# already handles (no acknowledgement: the next worker, placements read again).

FLEET = "fleet"
FLEET_CACHE_MAX_AGE_S = 1.0
FLEET_CACHE_SIZE = 1000


@dataclass(frozen=True)
class KeptModel:
    model: CatalogModel
    aliases: tuple[str, ...]
    placements: tuple[Placement, ...]
    generation: object
    at: float


_kept_models: dict[str, KeptModel] = {}


def model_remember(
    *, name: str, model: CatalogModel, placements: list[Placement], generation: object
) -> None:
    """Keep a model looked up by `name` (its name or an alias), its aliases and its
    placements, as read after `generation` (kernel.generations.current(FLEET))."""
    if generation is None:
        return
    aliases = tuple(model.aliases.values_list("name", flat=True))
    if len(_kept_models) >= FLEET_CACHE_SIZE:
        _kept_models.clear()
    _kept_models[name] = KeptModel(model, aliases, tuple(placements), generation, time.monotonic())


def model_cached(*, name: str, generation: object) -> KeptModel | None:
    """The model named `name` and its placements as kept by this process, if nothing in
    the fleet changed since and they are fresh; None: read them from the database."""
    if generation is None:
        return None
    kept = _kept_models.get(name)
    if kept is None or kept.generation != generation:
        return None
    if time.monotonic() - kept.at > FLEET_CACHE_MAX_AGE_S:
        return None
    return kept


def models_forget() -> None:
    """Drop every model this process keeps (tests; the generation does it otherwise)."""
    _kept_models.clear()


def hive_list_with_workers() -> QuerySet[Hive]:
    """Every hive by name, its workers and their models fetched with it (for listings)."""
    return hive_list().prefetch_related("workers__model")


def hive_get_with_workers(*, name: str) -> Hive | None:
    """The hive named `name` with its workers and their models, or None."""
    return hive_list_with_workers().filter(name=name).first()


def worker_list(*, by: Literal["hive", "model"] = "hive") -> QuerySet[Worker]:
    """Every worker with its hive and model, ordered by hive and device (`by="hive"`)
    or by model name (`by="model"`)."""
    order = {"hive": ("hive__name", "device"), "model": ("model__name",)}[by]
    return Worker.objects.select_related("hive", "model").order_by(*order)


def worker_find(*, hive_name: str, model_name: str, device: str) -> Worker | None:
    """The worker of `model_name` on the hive's `device`, if the hive has reported one."""
    return Worker.objects.filter(
        hive__name=hive_name, model__name=model_name, device=device
    ).first()


def pending_models(*, hive_name: str | None = None) -> QuerySet[ModelApproval]:
    """Models hives run that are neither assigned to them nor approved: never routed to
    until the operator approves them (`rbee hive approve HIVE MODEL`)."""
    rows = ModelApproval.objects.filter(approved=False).select_related("hive")
    if hive_name:
        rows = rows.filter(hive__name=hive_name)
    return rows.order_by("hive__name", "model_name")


def assignment_list() -> QuerySet[Assignment]:
    """What operators asked each hive to run (`rbee model add`), by model and hive."""
    return Assignment.objects.select_related("hive").order_by("model_name", "hive__name")


def model_alias_list() -> QuerySet[ModelAlias]:
    return ModelAlias.objects.select_related("model").order_by("name")


def model_download_get(*, download_id: int) -> ModelDownload | None:
    """A download as it stands now (its hive reports progress into it)."""
    return ModelDownload.objects.filter(pk=download_id).first()


def device_memory_buckets(
    *, since: datetime, until: datetime, step: int
) -> list[tuple[str, str, int, int]]:
    """The most memory each device used in each `step`-second bucket of [since, until),
    grouped by the database: (hive name, device, bucket start in unix seconds, MB)."""
    rows = (
        DeviceSample.objects.filter(minute__gte=since, minute__lt=until)
        .annotate(bucket=EpochBucket("minute", step))
        .values_list("hive__name", "device", "bucket")
        .annotate(used=Max("memory_used_mb"))
        .order_by()
    )
    return [(name, device, int(bucket), int(used)) for name, device, bucket, used in rows]
