"""Writes for hives, their workers and the model catalog."""

from __future__ import annotations

import hmac
import logging
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from gdpr import audit
from gdpr.actions import AuditAction
from gdpr.subjects import Subject
from hives.errors import HiveError, HiveErrorCode  # HiveError: the CLI imports it from here
from hives.events import announce_fleet_change
from hives.models import (
    Assignment,
    CatalogModel,
    DeviceSample,
    Hive,
    ModelAlias,
    ModelApproval,
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
from hives.selectors import FLEET
from hives.spec import CPU, Device, ModelArg, SpecError
from kernel import generations, secrets

logger = logging.getLogger("hives.services")

# Who did it, as the audit log names them: a person (their Subject), "cli:<OS user>",
# "hive:<name>", or "system". Views and the CLI pass it; the default is "system".
Actor = Subject | str
SYSTEM = "system"


def fleet_changed() -> None:
    """Hives, workers, models or aliases changed: every queen process drops the models and
    placements it keeps (hives.selectors.model_cached), at once and again on commit (as
    tenants.services.callers_changed). Saves and deletes call it by themselves
    (hives/apps.py); a queryset `.update()` of them must call it."""
    generations.bump(FLEET)
    transaction.on_commit(lambda: generations.bump(FLEET))


def _audit(action: AuditAction, hive: Hive | None, actor: Actor, /, **data: Any) -> None:
    """A fleet event, in the caller's transaction; the hive's operator-set region is the
    event's region."""
    audit.record(
        action,
        actor=actor,
        region=hive.region if hive is not None else "",
        data={"hive": hive.name, **data} if hive is not None else data,
    )


def hive_token_create(
    *,
    name: str,
    trust_models: bool | None = None,
    region: str | None = None,
    actor: Actor = SYSTEM,
) -> tuple[Hive, str]:
    """Create the hive `name` (or give it a new token) and return the token once.

    A new token replaces the old one at once (and lifts a revocation): a hive still
    using the old token is refused on its next connection, and a socket open with it is
    closed within a heartbeat. `trust_models` (None: leave as it is) lets the hive's
    start models in without approving each; `region` is the operator's word on where
    the hive is (None: leave as it is).
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
        hive.token_prefix = new.prefix
        hive.token_hash = new.digest
        hive.token_revoked = False
        fields = ["token_prefix", "token_hash", "token_revoked"]
        if trust_models is not None:
            hive.trust_models = trust_models
            fields.append("trust_models")
        if region is not None:
            hive.region = _region(region)
            fields.append("region")
        hive.save(update_fields=fields)
        # The token's prefix identifies it; the token itself never enters the log.
        _audit(
            AuditAction.HIVE_TOKEN,
            hive,
            actor,
            created=created,
            token_prefix=new.prefix,
            trust_models=hive.trust_models,
        )
    return hive, new.plaintext


def _region(region: str) -> str:
    text = region.strip()
    if len(text) > 32 or (text and slugify(text) != text.lower()):
        raise HiveError(
            HiveErrorCode.INVALID_REGION,
            f"invalid region {region[:40]!r}: up to 32 letters, digits, '-' and '_'",
        )
    return text


def _hive(name: str) -> Hive:
    hive = Hive.objects.select_for_update().filter(name=name).first()
    if hive is None:
        raise HiveError(
            HiveErrorCode.UNKNOWN_HIVE, f"no hive named {name!r}; create it with `rbee hive token`"
        )
    return hive


def hive_update(
    *,
    name: str,
    region: str | None = None,
    trust_models: bool | None = None,
    disabled: bool | None = None,
    actor: Actor = SYSTEM,
) -> Hive:
    """The operator's edits of a hive record (None: leave as it is). A disabled hive's
    socket is closed within a heartbeat and its reconnects are refused until enabled.
    One event per field that changed (hive.region, hive.trust, hive.disable/enable);
    setting a field to what it already is records nothing."""
    with transaction.atomic():
        hive = _hive(name)
        events: list[tuple[AuditAction, dict[str, Any]]] = []
        if region is not None and _region(region) != hive.region:
            events.append((AuditAction.HIVE_REGION, {"from": hive.region, "to": _region(region)}))
            hive.region = _region(region)
        if trust_models is not None and trust_models != hive.trust_models:
            events.append((AuditAction.HIVE_TRUST, {"trust_models": trust_models}))
            hive.trust_models = trust_models
        if disabled is not None and disabled != hive.disabled:
            action = AuditAction.HIVE_DISABLE if disabled else AuditAction.HIVE_ENABLE
            events.append((action, {}))
            hive.disabled = disabled
        hive.save(update_fields=["region", "trust_models", "disabled"])
        for action, data in events:
            _audit(action, hive, actor, **data)
    return hive


def hive_revoke(*, name: str, actor: Actor = SYSTEM) -> Hive:
    """Revoke the hive's token: its socket is closed within a heartbeat, it cannot connect
    again, and nothing is routed to it; `rbee hive token --name NAME` issues a new one."""
    with transaction.atomic():
        hive = _hive(name)
        hive.token_revoked = True
        hive.save(update_fields=["token_revoked"])
        _audit(AuditAction.HIVE_REVOKE, hive, actor, token_prefix=hive.token_prefix)
    return hive


class Access(StrEnum):
    """Whether a socket may still speak for its hive (hive_access)."""

    OK = "ok"
    REVOKED = "revoked"  # the token it was opened with is revoked or replaced
    DISABLED = "disabled"  # the operator disabled the hive


def hive_access(*, hive_id: int, token_hash: str) -> Access:
    """Whether a socket opened with the token `token_hash` may still speak for the hive:
    the hive exists and that token is its current, unrevoked one (else REVOKED), and the
    hive is enabled (else DISABLED)."""
    row = Hive.objects.filter(pk=hive_id).values("token_hash", "token_revoked", "disabled").first()
    if (
        row is None
        or row["token_revoked"]
        or not hmac.compare_digest(row["token_hash"], token_hash)
    ):
        return Access.REVOKED
    return Access.DISABLED if row["disabled"] else Access.OK


# Bounds on what a hive reports: numbers outside them are clamped (and logged), so a
# hive cannot put a negative load, a billion slots or an overflowing integer in the
# database or the scheduler's maps.
MAX_INFLIGHT = 100_000
MAX_SLOTS = 4096
MAX_MEMORY_BYTES = 1 << 50  # 1 PiB
MAX_BYTES = 1 << 50
# Bounds on how much a hive reports: entries past them are dropped (one log line per
# report), so a hive with a valid token cannot fill the database or hold the hive's row
# locked while it writes thousands of rows on every heartbeat.
MAX_REPORTED_WORKERS = 256
MAX_REPORTED_DEVICES = 64
# Unapproved models recorded per hive for the operator; further unknown names are not.
MAX_PENDING_MODELS = 64


def _capped(hive_name: str, what: str, entries: Any, limit: int) -> list[Any]:
    """The first `limit` entries of a reported list (anything else: none); the excess
    is dropped and logged once."""
    if not isinstance(entries, list):
        return []
    if len(entries) > limit:
        logger.warning(
            "hive %s reported %d %s; only the first %d are taken, the rest dropped",
            hive_name,
            len(entries),
            what,
            limit,
        )
        return entries[:limit]
    return entries


def bounded(hive_name: str, what: str, value: Any, *, low: int, high: int, default: int) -> int:
    """`value` as an int within [low, high]: a number outside is clamped, anything else
    (a string, a bool, null) is `default`; either is logged."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        logger.warning(
            "hive %s reported a %s that is not a number (%.40r); using %d",
            hive_name,
            what,
            value,
            default,
        )
        return default
    if value != value or value in (float("inf"), float("-inf")):  # never past loads()
        return default
    number = int(value)
    if number < low or number > high:
        clamped = min(max(number, low), high)
        logger.warning(
            "hive %s reported %s %s, outside [%d, %d]; clamped to %d",
            hive_name,
            what,
            str(number)[:40],
            low,
            high,
            clamped,
        )
        return clamped
    return number


def _devices(hive: Hive, entries: Any) -> list[dict[str, Any]]:
    """The device entries a hive reported that name a device (Device.of parses their kind
    and index); the others are dropped and logged. A hive is not trusted: what it says
    ends up in response headers and in the scheduler's maps."""
    out = []
    for entry in _capped(hive.name, "devices", entries, MAX_REPORTED_DEVICES):
        try:
            if not isinstance(entry, dict):
                raise SpecError(f"a device entry is an object, not {type(entry).__name__}")
            Device.of(entry)
        except SpecError as exc:
            logger.warning("hive %s reported a bad device entry, dropped: %s", hive.name, exc)
            continue
        out.append(_device_fields(hive, entry))
    return out


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _device_fields(hive: Hive, entry: dict[str, Any]) -> dict[str, Any]:
    """A device entry with scalar fields only: numbers within [0, MAX_BYTES] (a string
    where a number belongs, e.g. memory_free_mb, would break every placement of the
    hive's workers), text without control characters and at most 200 characters."""
    clean: dict[str, Any] = {}
    for key, value in list(entry.items())[:64]:
        if not isinstance(key, str) or len(key) > 64:
            continue
        if isinstance(value, bool) or value is None:
            clean[key] = value
        elif isinstance(value, int | float):
            clean[key] = value if 0 <= value <= MAX_BYTES else min(max(value, 0), MAX_BYTES)
        elif isinstance(value, str):
            clean[key] = _CONTROL.sub("", value)[:200]
        else:
            logger.warning("hive %s: device field %.64r is not a scalar; dropped", hive.name, key)
    for key in ("memory_total_mb", "memory_free_mb", "memory_used_mb", "utilization"):
        if key in clean and not isinstance(clean[key], int | float):
            logger.warning("hive %s: device field %s is not a number; dropped", hive.name, key)
            del clean[key]
    return clean


def _text(value: Any, limit: int) -> str:
    return str(value or "")[:limit]


def _allowed_models(hive: Hive) -> set[str]:
    """The model names the hive may serve: assigned to it, or approved for it."""
    assigned = set(Assignment.objects.filter(hive=hive).values_list("model_name", flat=True))
    approved = set(
        ModelApproval.objects.filter(hive=hive, approved=True).values_list("model_name", flat=True)
    )
    return assigned | approved


class _Pending:
    """What the hive runs unapproved, recorded (or refreshed) for the operator to approve:
    at most MAX_PENDING_MODELS unapproved rows per hive; an unknown name past that is not
    recorded (logged once per report)."""

    def __init__(self, hive: Hive) -> None:
        self.hive = hive
        self.count = ModelApproval.objects.filter(hive=hive, approved=False).count()
        self.refused = 0

    def record(self, name: str, w: dict[str, Any], device: str, reason: str) -> None:
        hive = self.hive
        defaults = {
            "capability": _text(w.get("capability"), 32),
            "engine": _text(w.get("engine"), 64),
            "source": _text(w.get("source"), 1000),
            "device": device,
            "state": _text(w.get("state"), 16),
            "reason": reason[:200],
        }
        row = ModelApproval.objects.filter(hive=hive, model_name=name).first()
        if row is None:
            if self.count >= MAX_PENDING_MODELS:
                self.refused += 1
                return
            row, created = ModelApproval.objects.get_or_create(
                hive=hive, model_name=name, defaults=defaults
            )
            if created:
                self.count += 1
                logger.warning(
                    "hive %s runs %.200r, which is not assigned to it nor approved (%s): "
                    "ignored for routing until `rbee hive approve %s %s`",
                    hive.name,
                    name,
                    reason,
                    hive.name,
                    name,
                )
                return
        if not row.approved:
            for field, value in defaults.items():
                setattr(row, field, value)
            row.save(update_fields=[*defaults, "updated_at"])

    def done(self) -> None:
        if self.refused:
            logger.warning(
                "hive %s already has %d models waiting for approval; %d more it reported "
                "were not recorded (`rbee hive list` shows the pending ones)",
                self.hive.name,
                self.count,
                self.refused,
            )


def _sync_workers(hive: Hive, workers: Any, *, start: bool = False) -> None:
    """Record the workers a hive reports, for the models it may serve.

    A hive is not trusted with the catalog: a worker of a model neither assigned nor
    approved for it is recorded as pending and never becomes a Worker (so nothing is
    routed to it); a model's definition (capability, engine, source) is the catalog's,
    and a report never changes it; a name that is an alias of another model is never
    taken. `start`: these are the hive's start models (its hello), approved at once if
    the operator trusts the hive's models."""
    seen: set[int] = set()
    allowed = _allowed_models(hive)
    aliases = set(ModelAlias.objects.values_list("name", flat=True))
    pending = _Pending(hive)
    for w in _capped(hive.name, "workers", workers, MAX_REPORTED_WORKERS):
        if not isinstance(w, dict):
            continue
        name = str(w.get("model") or "")
        if not name or len(name) > 200:
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
        if name in aliases:
            pending.record(name, w, str(device), "the name is an alias of another model")
            continue
        if name not in allowed:
            if start and hive.trust_models:
                ModelApproval.objects.update_or_create(
                    hive=hive, model_name=name, defaults={"approved": True, "reason": "start"}
                )
                allowed.add(name)
            else:
                pending.record(name, w, str(device), "not assigned to this hive nor approved")
                continue
        model = CatalogModel.objects.filter(name=name).first()
        if model is None:
            # First seen on a hive it is assigned or approved for: the catalog learns it.
            capability = str(w.get("capability") or Capability.TEXT_GEN)
            if capability not in {c.value for c in Capability}:
                logger.warning(
                    "hive %s reported %.200r with unknown capability %.40r; dropped",
                    hive.name,
                    name,
                    capability,
                )
                continue
            model, _ = CatalogModel.objects.get_or_create(
                name=name,
                defaults={
                    "capability": capability,
                    "engine": _text(w.get("engine"), 64),
                    "source": _text(w.get("source"), 1000),
                },
            )
        state = str(w.get("state") or WorkerState.STARTING)
        if state not in {s.value for s in WorkerState}:
            logger.warning("hive %s reported worker state %.40r; taken as failed", hive.name, state)
            state = WorkerState.FAILED
        worker, _ = Worker.objects.update_or_create(
            hive=hive,
            model=model,
            device=str(device),
            defaults={
                "state": state,
                "pinned": bool(w.get("pinned", False)),
                "inflight": bounded(
                    hive.name, "inflight", w.get("inflight"), low=0, high=MAX_INFLIGHT, default=0
                ),
                "slots": bounded(
                    hive.name, "slots", w.get("slots"), low=1, high=MAX_SLOTS, default=1
                ),
                "memory_bytes": bounded(
                    hive.name,
                    "memory_bytes",
                    w.get("memory_bytes"),
                    low=0,
                    high=MAX_MEMORY_BYTES,
                    default=0,
                ),
                "message": _text(w.get("message"), 1000),
            },
        )
        seen.add(worker.pk)
    pending.done()
    if Worker.objects.filter(hive=hive).exclude(pk__in=seen).update(state=WorkerState.STOPPED):
        fleet_changed()
    # Workers it no longer reports stay, stopped, for `rbee worker start`; past the cap
    # the oldest go, so reports naming ever new devices cannot grow the table.
    extra = Worker.objects.filter(hive=hive).exclude(pk__in=seen).order_by("-updated_at", "-pk")
    stale = list(extra.values_list("pk", flat=True)[max(0, MAX_REPORTED_WORKERS - len(seen)) :])
    if stale:
        Worker.objects.filter(pk__in=stale).delete()


def hive_connected(*, hive_id: int, channel_name: str, hello: dict[str, Any]) -> str:
    """Take the hive over for this connection; returns the channel of the connection it
    replaces ('' if none), whose jobs are lost."""
    now = timezone.now()
    with transaction.atomic():
        hive = Hive.objects.select_for_update().get(pk=hive_id)
        previous = hive.channel_name if hive.channel_name != channel_name else ""
        hive.status = Hive.Status.ONLINE
        hive.channel_name = channel_name
        # The region is the operator's: the hello's is only recorded beside it.
        hive.reported_region = _text(hello.get("region"), 32)
        if hive.reported_region and hive.reported_region != hive.region:
            logger.warning(
                "hive %s says its region is %r; the operator's record says %r, which stands "
                "(`rbee hive set %s --region R` changes it)",
                hive.name,
                hive.reported_region,
                hive.region,
                hive.name,
            )
        hive.version = _text(hello.get("version"), 32)
        hive.devices = _devices(hive, hello.get("devices") or [])
        hive.connected_at = now
        hive.last_seen_at = now
        hive.save()
        _audit(
            AuditAction.HIVE_CONNECT,
            hive,
            f"hive:{hive.name}",
            version=hive.version,
            reported_region=hive.reported_region,
            devices=len(hive.devices or []),
            replaced=bool(previous),
        )
        _sync_workers(hive, hello.get("workers"), start=True)
        # Unfinished downloads go to the new connection again (they resume).
        ModelDownload.objects.filter(
            hive=hive, status__in=[DownloadState.QUEUED, DownloadState.RUNNING]
        ).update(sent_at=None)
        announce_fleet_change("hive.connect")
    return previous


def _ready_since(before: Any, workers: Any) -> dict[str, list[Any]]:
    """Since when each ready worker the hive reports has been ready (as the queen first
    heard it, to a heartbeat), by "model|device", kept while its process (pid) stays the
    same: the workers' uptime on the dashboard. Bounded like the report itself."""
    old = before if isinstance(before, dict) else {}
    now = round(timezone.now().timestamp(), 1)
    out: dict[str, list[Any]] = {}
    for w in workers[:MAX_REPORTED_WORKERS] if isinstance(workers, list) else []:
        if not isinstance(w, dict) or w.get("state") != WorkerState.READY:
            continue
        key = f"{_text(w.get('model'), 200)}|{_text(w.get('device') or CPU, 32)}"
        pid = w.get("pid") if isinstance(w.get("pid"), int) else None
        seen = old.get(key)
        if isinstance(seen, list) and len(seen) == 2 and seen[0] == pid:
            out[key] = seen
        else:
            out[key] = [pid, now]
    return out


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
        before = hive.telemetry if isinstance(hive.telemetry, dict) else {}
        ready_since = (
            _ready_since(before.get("ready_since"), beat.get("workers"))
            if "workers" in beat
            else before.get("ready_since")
        )
        hive.telemetry = {
            "inflight": bounded(
                hive.name, "inflight", beat.get("inflight"), low=0, high=MAX_INFLIGHT, default=0
            ),
            # Kept only while some worker is ready (the dashboard's uptimes).
            **({"ready_since": ready_since} if ready_since else {}),
        }
        hive.save(update_fields=["last_seen_at", "status", "devices", "telemetry"])
        if "workers" in beat:
            _sync_workers(hive, beat.get("workers"))
        if "devices" in beat:
            device_samples_record(hive=hive, devices=hive.devices, at=hive.last_seen_at)
        announce_fleet_change("hive.heartbeat")
    return True


# (hive id, device) -> the last minute this process wrote a sample for: a heartbeat comes
# every few seconds, a sample is kept once a minute (the unique constraint settles races
# between queens).
_sampled: dict[tuple[int, str], datetime] = {}


def device_samples_record(
    *, hive: Hive, devices: list[dict[str, Any]], at: datetime | None = None
) -> int:
    """Keep the devices' memory and utilisation for the minute of `at` (now), once per
    device and minute; the number of rows written. `devices` are cleaned entries
    (_devices): numbers are numbers within bounds."""
    now = at or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    rows = []
    for entry in devices[:MAX_REPORTED_DEVICES]:
        try:
            device = str(Device.of(entry))
        except SpecError:
            continue
        if _sampled.get((hive.pk, device)) == minute:
            continue
        total = entry.get("memory_total_mb")
        used = entry.get("memory_used_mb")
        if used is None and isinstance(total, int | float):
            free = entry.get("memory_free_mb")
            used = total - free if isinstance(free, int | float) else None
        if not isinstance(total, int | float) or not isinstance(used, int | float):
            continue
        util = entry.get("utilization")
        rows.append(
            DeviceSample(
                hive=hive,
                device=device,
                minute=minute,
                memory_used_mb=int(max(0, used)),
                memory_total_mb=int(max(0, total)),
                utilization=float(util) if isinstance(util, int | float) else None,
            )
        )
        _sampled[(hive.pk, device)] = minute
    if rows:
        DeviceSample.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def device_samples_prune(*, before: datetime) -> int:
    """Delete device samples of minutes before `before`; how many rows."""
    deleted, _ = DeviceSample.objects.filter(minute__lt=before).delete()
    stale = [k for k, minute in _sampled.items() if minute < before]
    for k in stale:
        _sampled.pop(k, None)
    return deleted


def model_approve(
    *, hive_name: str, model_name: str, approved: bool = True, actor: Actor = SYSTEM
) -> ModelApproval:
    """Let the hive serve `model_name` (or withdraw that: `approved=False`).

    The catalog row is made from what the hive reported if the catalog lacks the model;
    an existing model's definition is never changed. An alias's name cannot be approved
    (the hive would shadow the model the alias names)."""
    with transaction.atomic():
        hive = _hive(hive_name)
        if ModelAlias.objects.filter(name=model_name).exists():
            raise HiveError(
                HiveErrorCode.INVALID_ALIAS,
                f"{model_name!r} is an alias of another model; a hive cannot serve it "
                "under that name",
            )
        if not model_name or len(model_name) > 200:
            raise HiveError(HiveErrorCode.UNKNOWN_MODEL, "name a model (up to 200 characters)")
        row, _ = ModelApproval.objects.select_for_update().get_or_create(
            hive=hive, model_name=model_name
        )
        row.approved = approved
        row.reason = "operator" if approved else "withdrawn by the operator"
        row.save(update_fields=["approved", "reason", "updated_at"])
        if not approved:
            Worker.objects.filter(hive=hive, model__name=model_name).delete()
        action = AuditAction.MODEL_APPROVE if approved else AuditAction.MODEL_WITHDRAW
        _audit(action, hive, actor, model=model_name)
    return row


def hive_disconnected(*, hive_id: int, channel_name: str, code: int | None = None) -> None:
    """Mark the hive offline, unless a newer connection already took it over (then the
    takeover was the event: no hive.disconnect is recorded)."""
    with transaction.atomic():
        gone = Hive.objects.filter(pk=hive_id, channel_name=channel_name).update(
            status=Hive.Status.OFFLINE, channel_name=""
        )
        if gone:
            fleet_changed()
            hive = Hive.objects.get(pk=hive_id)
            _audit(AuditAction.HIVE_DISCONNECT, hive, f"hive:{hive.name}", code=code)
            announce_fleet_change("hive.disconnect")


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
        held = list(hives.select_for_update())
        for hive in held:
            _audit(AuditAction.HIVE_DISCONNECT, hive, SYSTEM, reason="queen_stopped")
        if held:
            announce_fleet_change("hive.disconnect")
            fleet_changed()
        return Hive.objects.filter(pk__in=[h.pk for h in held]).update(
            status=Hive.Status.OFFLINE, channel_name=""
        )


def assignment_add(
    *,
    hive_name: str,
    spec: str,
    device: str = CPU,
    pinned: bool = False,
    actor: Actor = SYSTEM,
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
        before = (
            Assignment.objects.select_for_update()
            .filter(hive=hive, model_name=arg.name, device=where)
            .values_list("spec", "pinned")
            .first()
        )
        assignment, _ = Assignment.objects.update_or_create(
            hive=hive,
            model_name=arg.name,
            device=where,
            defaults={"spec": arg.text, "pinned": pinned},
        )
        # A new assignment (or a new spec) is model.add; only the pin changed: model.pin
        # or model.unpin; asking again for what is already there records nothing.
        data = {"model": arg.name, "device": str(where), "spec": arg.text, "pinned": pinned}
        if before is None or before[0] != arg.text:
            _audit(AuditAction.MODEL_ADD, hive, actor, **data)
        elif before[1] != pinned:
            action = AuditAction.MODEL_PIN if pinned else AuditAction.MODEL_UNPIN
            _audit(action, hive, actor, **data)
        announce_fleet_change("model.add")
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


def assignment_remove(*, hive_name: str, model_name: str, actor: Actor = SYSTEM) -> int:
    with transaction.atomic():
        deleted, _ = Assignment.objects.filter(hive__name=hive_name, model_name=model_name).delete()
        if deleted:
            _audit(
                AuditAction.MODEL_REMOVE,
                Hive.objects.filter(name=hive_name).first(),
                actor,
                model=model_name,
                assignments=deleted,
            )
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
    *,
    hive_name: str,
    model_name: str,
    action: str,
    device: str | None = None,
    actor: Actor = SYSTEM,
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
        command = WorkerCommand.objects.create(
            hive=worker.hive, model_name=model_name, device=worker.device, action=action
        )
        _audit(
            AuditAction.WORKER_COMMAND,
            worker.hive,
            actor,
            model=model_name,
            device=worker.device,
            action=action,
        )
        announce_fleet_change("worker.command")
        return command


def model_alias_set(
    *,
    alias: str,
    target: str,
    capability: str = "",
    engine: str = "",
    keep: bool = False,
    actor: Actor = SYSTEM,
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
        before = ModelAlias.objects.filter(name=alias).values_list("model_id", flat=True).first()
        if keep:  # leave an alias the owner already set alone
            row, _ = ModelAlias.objects.get_or_create(name=alias, defaults={"model": model})
        else:
            row, _ = ModelAlias.objects.update_or_create(name=alias, defaults={"model": model})
        if before != row.model_id:
            _audit(AuditAction.MODEL_ALIAS, None, actor, alias=alias, model=model.name)
            announce_fleet_change("model.alias")
    return row


def model_alias_remove(*, alias: str, actor: Actor = SYSTEM) -> int:
    with transaction.atomic():
        deleted, _ = ModelAlias.objects.filter(name=alias).delete()
        if deleted:
            _audit(AuditAction.MODEL_UNALIAS, None, actor, alias=alias)
    return deleted


def model_download_create(*, hive_name: str, source: str, actor: Actor = SYSTEM) -> ModelDownload:
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
        if unfinished is not None:
            return unfinished
        row = ModelDownload.objects.create(hive=hive, source=source.strip())
        _audit(AuditAction.MODEL_DOWNLOAD, hive, actor, source=row.source, download_id=row.pk)
        announce_fleet_change("model.download")
        return row


def model_download_progress(*, hive_id: int, report: dict[str, Any]) -> None:
    """A hive's report on one of its downloads (numbers bounded, text cut to size)."""
    state = str(report.get("state") or "")
    if state not in {s.value for s in DownloadState}:
        return
    name = f"#{hive_id}"
    download_id = bounded(name, "download id", report.get("id"), low=0, high=2**62, default=0)
    fields: dict[str, Any] = {
        "status": state,
        "done_bytes": bounded(name, "done", report.get("done"), low=0, high=MAX_BYTES, default=0),
        "total_bytes": bounded(
            name, "total", report.get("total"), low=0, high=MAX_BYTES, default=0
        ),
        "path": _text(report.get("path"), 1000),
        "message": _text(report.get("message"), 1000),
        "updated_at": timezone.now(),
    }
    if report.get("revision"):
        fields["revision"] = _text(report.get("revision"), 200)
    with transaction.atomic():
        if ModelDownload.objects.filter(pk=download_id, hive_id=hive_id).update(**fields):
            announce_fleet_change("model.download")
