"""Writes for hives, their workers and the model catalog."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from hives.errors import HiveError, HiveErrorCode  # HiveError: the CLI imports it from here
from hives.models import (
    Assignment,
    CatalogModel,
    Hive,
    ModelAlias,
    ModelDownload,
    Worker,
    WorkerCommand,
)
from hives.protocol import (
    Capability,
    DownloadState,
    Op,
    WorkerAction,
    WorkerState,
)
from hives.spec import CPU, Device, ModelArg, SpecError
from kernel import secrets

logger = logging.getLogger("hives.services")


def hive_token_create(*, name: str) -> tuple[Hive, str]:
    """Create the hive `name` (or give it a new token) and return the token once.

    A new token replaces the old one at once: a hive still using the old token
    is refused on its next connection.
    """
    if not name or slugify(name) != name:
        raise HiveError(
            HiveErrorCode.INVALID_NAME,
            f"invalid hive name {name!r}: use lowercase letters, digits, '-' and '_'",
        )
    new = secrets.make(Hive.TOKEN_KIND)
    with transaction.atomic():
        hive, created = Hive.objects.select_for_update().get_or_create(
            name=name, defaults={"token_prefix": new.prefix, "token_hash": new.digest}
        )
        if not created:
            hive.token_prefix = new.prefix
            hive.token_hash = new.digest
            hive.save(update_fields=["token_prefix", "token_hash"])
    return hive, new.plaintext


def _devices(hive: Hive, entries: Any) -> list[dict[str, Any]]:
    """The device entries a hive reported that name a device (Device.of parses their kind
    and index); the others are dropped and logged. A hive is not trusted: what it says
    ends up in response headers and in the scheduler's maps."""
    out = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            if not isinstance(entry, dict):
                raise SpecError(f"a device entry is an object, not {type(entry).__name__}")
            Device.of(entry)
        except SpecError as exc:
            logger.warning("hive %s reported a bad device entry, dropped: %s", hive.name, exc)
            continue
        out.append(entry)
    return out


def _sync_workers(hive: Hive, workers: list[dict[str, Any]]) -> None:
    seen: set[int] = set()
    for w in workers:
        if not isinstance(w, dict):
            continue
        name = str(w.get("model") or "")
        if not name:
            continue
        # The device goes into the X-Rbee-Worker header of each job the worker serves:
        # only a device the grammar accepts is stored, in its one spelling.
        try:
            device = Device.parse(w.get("device") or CPU)
        except SpecError as exc:
            logger.warning(
                "hive %s reported worker %.200r on a bad device, dropped: %s",
                hive.name,
                name,
                exc.message,
            )
            continue
        model, _ = CatalogModel.objects.get_or_create(
            name=name,
            defaults={
                "capability": str(w.get("capability") or Capability.TEXT_GEN),
                "engine": str(w.get("engine") or ""),
                "source": str(w.get("source") or ""),
            },
        )
        changed = []
        for field in ("capability", "engine", "source"):
            value = str(w.get(field) or "")
            if value and getattr(model, field) != value:
                setattr(model, field, value)
                changed.append(field)
        if changed:
            model.save(update_fields=changed)
        worker, _ = Worker.objects.update_or_create(
            hive=hive,
            model=model,
            device=str(device),
            defaults={
                "state": str(w.get("state") or WorkerState.STARTING),
                "pinned": bool(w.get("pinned", False)),
                "inflight": int(w.get("inflight") or 0),
                "slots": max(1, int(w.get("slots") or 1)),
                "memory_bytes": max(0, int(w.get("memory_bytes") or 0)),
                "message": str(w.get("message") or "")[:1000],
            },
        )
        seen.add(worker.pk)
    Worker.objects.filter(hive=hive).exclude(pk__in=seen).update(state=WorkerState.STOPPED)


def hive_connected(*, hive_id: int, channel_name: str, hello: dict[str, Any]) -> str:
    """Take the hive over for this connection; returns the channel of the connection it
    replaces ('' if none), whose jobs are lost."""
    now = timezone.now()
    with transaction.atomic():
        hive = Hive.objects.select_for_update().get(pk=hive_id)
        previous = hive.channel_name if hive.channel_name != channel_name else ""
        hive.status = Hive.Status.ONLINE
        hive.channel_name = channel_name
        hive.region = str(hello.get("region") or "")[:32]
        hive.version = str(hello.get("version") or "")[:32]
        hive.devices = _devices(hive, hello.get("devices") or [])
        hive.connected_at = now
        hive.last_seen_at = now
        hive.save()
        _sync_workers(hive, list(hello.get("workers") or []))
        # Unfinished downloads go to the new connection again (they resume).
        ModelDownload.objects.filter(
            hive=hive, status__in=[DownloadState.QUEUED, DownloadState.RUNNING]
        ).update(sent_at=None)
    return previous


def hive_heartbeat(*, hive_id: int, channel_name: str, beat: dict[str, Any]) -> bool:
    """Record telemetry; False if this connection no longer owns the hive."""
    with transaction.atomic():
        hive = Hive.objects.select_for_update().filter(pk=hive_id).first()
        if hive is None or hive.channel_name != channel_name:
            return False
        hive.last_seen_at = timezone.now()
        hive.status = Hive.Status.ONLINE
        if "devices" in beat:
            hive.devices = _devices(hive, beat.get("devices") or [])
        hive.telemetry = {"inflight": int(beat.get("inflight") or 0)}
        hive.save(update_fields=["last_seen_at", "status", "devices", "telemetry"])
        if "workers" in beat:
            _sync_workers(hive, list(beat.get("workers") or []))
    return True


def hive_disconnected(*, hive_id: int, channel_name: str) -> None:
    """Mark the hive offline, unless a newer connection already took it over."""
    with transaction.atomic():
        Hive.objects.filter(pk=hive_id, channel_name=channel_name).update(
            status=Hive.Status.OFFLINE, channel_name=""
        )


def hives_forget_connections(*, channel_marker: str | None = None) -> int:
    """Mark hives offline whose socket a queen process held.

    With a marker (the channel layer's per-process client prefix), only the
    hives held by that process: a queen calls this as it shuts down. Without
    one, every hive: on the embedded default one process owns all sockets, so
    any connection recorded when it starts belongs to a previous run. Hives
    reconnect on their own.
    """
    hives = Hive.objects.exclude(channel_name="")
    if channel_marker:
        hives = hives.filter(channel_name__contains=f".{channel_marker}!")
    with transaction.atomic():
        return hives.update(status=Hive.Status.OFFLINE, channel_name="")


def assignment_add(
    *, hive_name: str, spec: str, device: str = CPU, pinned: bool = False
) -> Assignment:
    """Ask for `spec` on the hive's device; the hive loads it within a heartbeat.

    The spec is checked here with the grammar the hive uses (hives/spec.py): a bad one
    never reaches the hive. A bundled or well-known NAME is the hive's to resolve (it
    knows which packages it has)."""
    hive = Hive.objects.filter(name=hive_name).first()
    if hive is None:
        raise HiveError(
            HiveErrorCode.UNKNOWN_HIVE,
            f"no hive named {hive_name!r}; create it with `rbee hive token`",
        )
    try:
        arg = ModelArg.parse(spec)
        # NAME@cuda:0 names its device itself.
        where = arg.device or _device_name(hive, device)
        if arg.engine:
            arg.to_spec(where)
    except SpecError as exc:
        raise HiveError(HiveErrorCode.INVALID_SPEC, exc.message) from exc
    with transaction.atomic():
        assignment, _ = Assignment.objects.update_or_create(
            hive=hive,
            model_name=arg.name,
            device=where,
            defaults={"spec": arg.text, "pinned": pinned},
        )
    return assignment


def _device_name(hive: Hive, device: str) -> Device:
    """`--device 1` means the hive's GPU number 1, whatever its kind (cuda, rocm, metal);
    anything else is a device name (hives.spec.Device)."""
    number = device.strip(" ")
    if number.isascii() and number.isdigit():
        for d in hive.devices or []:
            if d.get("kind") != CPU and str(d.get("index")) == number:
                return Device(f"{d.get('kind')}:{number}")
        return Device(f"cuda:{number}")
    try:
        return Device(device)
    except SpecError as exc:
        raise HiveError(
            HiveErrorCode.INVALID_DEVICE, f"{exc.message}, or N (the hive's GPU number N)"
        ) from None


def assignment_remove(*, hive_name: str, model_name: str) -> int:
    with transaction.atomic():
        deleted, _ = Assignment.objects.filter(hive__name=hive_name, model_name=model_name).delete()
    return deleted


def assignments_to_send(*, hive_id: int, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the hive must start or stop to match its assignments (by its last report)."""
    # A refused model is asked for again: memory may have been freed since.
    running = {
        (str(w.get("model")), str(w.get("device") or CPU))
        for w in workers
        if w.get("state") != WorkerState.REFUSED
    }
    wanted = list(Assignment.objects.filter(hive_id=hive_id))
    out = [
        {"op": Op.SPAWN, "spec": a.spec, "device": a.device, "pinned": a.pinned}
        for a in wanted
        if (a.model_name, a.device) not in running
    ]
    # Operators' orders for single workers, once each.
    with transaction.atomic():
        pending = list(
            WorkerCommand.objects.select_for_update()
            .filter(hive_id=hive_id, sent_at__isnull=True)
            .order_by("id")
        )
        WorkerCommand.objects.filter(pk__in=[c.pk for c in pending]).update(sent_at=timezone.now())
    out += [
        {"op": Op.WORKER, "action": c.action, "model": c.model_name, "device": c.device}
        for c in pending
    ]
    with transaction.atomic():
        downloads = list(
            ModelDownload.objects.select_for_update()
            .filter(
                hive_id=hive_id,
                sent_at__isnull=True,
                status__in=[DownloadState.QUEUED, DownloadState.RUNNING],
            )
            .order_by("id")
        )
        ModelDownload.objects.filter(pk__in=[d.pk for d in downloads]).update(
            sent_at=timezone.now()
        )
    out += [{"op": Op.DOWNLOAD, "id": d.pk, "source": d.source} for d in downloads]
    # Workers the queen had assigned and no longer wants (`rbee model rm`).
    keep = {(a.model_name, a.device) for a in wanted}
    out += [
        {"op": Op.STOP, "model": str(w.get("model")), "device": str(w.get("device") or CPU)}
        for w in workers
        if w.get("assigned") and (str(w.get("model")), str(w.get("device") or CPU)) not in keep
    ]
    return out


def worker_command_create(
    *, hive_name: str, model_name: str, action: str, device: str | None = None
) -> WorkerCommand:
    """Order a worker to start, stop or restart; its hive gets it with its next heartbeat."""
    if action not in {a.value for a in WorkerAction}:
        raise HiveError(
            HiveErrorCode.INVALID_ACTION, f"unknown action {action!r}: use start, stop or restart"
        )
    workers = Worker.objects.filter(hive__name=hive_name, model__name=model_name)
    if device:
        workers = workers.filter(device=device)
    worker = workers.select_related("hive").order_by("device").first()
    if worker is None:
        where = f" on {device}" if device else ""
        raise HiveError(
            HiveErrorCode.NO_WORKER, f"hive {hive_name!r} has no worker for {model_name!r}{where}"
        )
    with transaction.atomic():
        return WorkerCommand.objects.create(
            hive=worker.hive, model_name=model_name, device=worker.device, action=action
        )


def model_alias_set(
    *, alias: str, target: str, capability: str = "", engine: str = "", keep: bool = False
) -> ModelAlias:
    """Make `alias` another name of the catalog model `target` (created if need be, so
    `rbee up` can name models before their hive has reported them)."""
    if not alias or alias == target:
        raise HiveError(HiveErrorCode.INVALID_ALIAS, "an alias needs a name of its own")
    with transaction.atomic():
        if CatalogModel.objects.filter(name=alias).exists():
            raise HiveError(
                HiveErrorCode.INVALID_ALIAS, f"{alias!r} is already the name of a model"
            )
        model = CatalogModel.objects.filter(name=target).first()
        if model is None:
            if not capability:
                raise HiveError(HiveErrorCode.UNKNOWN_MODEL, f"no model named {target!r}")
            model = CatalogModel.objects.create(name=target, capability=capability, engine=engine)
        if keep:  # leave an alias the owner already set alone
            row, _ = ModelAlias.objects.get_or_create(name=alias, defaults={"model": model})
        else:
            row, _ = ModelAlias.objects.update_or_create(name=alias, defaults={"model": model})
    return row


def model_alias_remove(*, alias: str) -> int:
    with transaction.atomic():
        deleted, _ = ModelAlias.objects.filter(name=alias).delete()
    return deleted


def model_download_create(*, hive_name: str, source: str) -> ModelDownload:
    """Ask the hive to fetch `source` (a repo id, or a local path it checks)."""
    hive = Hive.objects.filter(name=hive_name).first()
    if hive is None:
        raise HiveError(
            HiveErrorCode.UNKNOWN_HIVE,
            f"no hive named {hive_name!r}; create it with `rbee hive token`",
        )
    if not source.strip():
        raise HiveError(
            HiveErrorCode.INVALID_SOURCE,
            "say what to download: a repo id (org/name) or a local path",
        )
    with transaction.atomic():
        # Asked again while it still runs (the CLI gave up waiting, say): follow that one
        # rather than start a second download into the same files.
        unfinished = (
            ModelDownload.objects.select_for_update()
            .filter(
                hive=hive,
                source=source.strip(),
                status__in=[DownloadState.QUEUED, DownloadState.RUNNING],
            )
            .first()
        )
        return unfinished or ModelDownload.objects.create(hive=hive, source=source.strip())


def model_download_progress(*, hive_id: int, report: dict[str, Any]) -> None:
    """A hive's report on one of its downloads."""
    state = str(report.get("state") or "")
    if state not in {s.value for s in DownloadState}:
        return
    with transaction.atomic():
        ModelDownload.objects.filter(pk=int(report.get("id") or 0), hive_id=hive_id).update(
            status=state,
            done_bytes=max(0, int(report.get("done") or 0)),
            total_bytes=max(0, int(report.get("total") or 0)),
            path=str(report.get("path") or "")[:1000],
            message=str(report.get("message") or "")[:1000],
            updated_at=timezone.now(),
        )
