"""What the fleet page shows, read from the hives app's selectors and the telemetry its
hives report (Hive.devices, Hive.telemetry), plus the model queues this queen process
holds. One function builds it for the page and for every live push."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import timezone

from hives import selectors as hive_selectors
from hives.models import Hive, ModelDownload, Worker
from hives.protocol import DownloadState, WorkerState
from hives.spec import CPU, Device, SpecError
from inference import queueing

MiB = 2**20
RECENT_DOWNLOADS = 10


@dataclass
class DeviceRow:
    name: str  # "cuda:0", "cpu"
    label: str  # the hardware's own name ("NVIDIA GeForce RTX 4090")
    gpu_type: str
    total_mb: int | None
    used_mb: int | None
    utilization: float | None  # percent; None where the hardware does not report it
    workers: list[WorkerRow] = field(default_factory=list)

    @property
    def free(self) -> bool:
        """No worker holds memory here (stopped, failed and refused ones hold none)."""
        return not any(w.holds_memory for w in self.workers)

    @property
    def memory_text(self) -> str:
        if not self.total_mb:
            return ""
        return f"{human_bytes((self.used_mb or 0) * MiB)} / {human_bytes(self.total_mb * MiB)}"

    @property
    def used_percent(self) -> int:
        if not self.total_mb or self.used_mb is None:
            return 0
        return max(0, min(100, round(100 * self.used_mb / self.total_mb)))


@dataclass
class WorkerRow:
    id: int
    model: str
    capability: str
    device: str
    state: str
    pinned: bool
    memory_bytes: int
    inflight: int
    slots: int
    message: str
    uptime: str  # as shown: coarse (coarse_age), "—" where unknown
    queue_waiting: int
    queue_running: int
    assigned: bool = False  # an operator put it there (`rbee model add`, Spawn)
    # The exact figure, left out of comparisons: two rows are equal when they show the same.
    uptime_s: int | None = field(default=None, compare=False)

    @property
    def holds_memory(self) -> bool:
        return self.state in (WorkerState.READY, WorkerState.STARTING, WorkerState.STOPPING)

    @property
    def memory(self) -> str:
        return human_bytes(self.memory_bytes) if self.memory_bytes else "—"


@dataclass
class HiveRow:
    id: int
    name: str
    status: str  # online | stale | offline | disabled | revoked
    reason: str
    heartbeat_age: str  # as shown: coarse (coarse_age), "never" where it never beat
    version: str
    region: str
    machine: str
    devices: list[DeviceRow]
    other_workers: list[WorkerRow]  # on a device the hive no longer reports
    inflight: int
    heartbeat_age_s: int | None = field(default=None, compare=False)

    @property
    def live(self) -> bool:
        return self.status == "online"

    @property
    def workers(self) -> list[WorkerRow]:
        return [w for d in self.devices for w in d.workers] + self.other_workers

    @property
    def free_devices(self) -> list[DeviceRow]:
        return [d for d in self.devices if d.free]


@dataclass
class DownloadRow:
    id: int
    hive: str
    source: str
    status: str
    done_bytes: int
    total_bytes: int
    message: str
    path: str

    @property
    def percent(self) -> int:
        if not self.total_bytes:
            return 100 if self.status == DownloadState.DONE else 0
        return max(0, min(100, round(100 * self.done_bytes / self.total_bytes)))

    @property
    def progress(self) -> str:
        if not self.total_bytes:
            return human_bytes(self.done_bytes) if self.done_bytes else ""
        return f"{human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)}"

    @property
    def unfinished(self) -> bool:
        return self.status in (DownloadState.QUEUED, DownloadState.RUNNING)


@dataclass
class Fleet:
    hives: list[HiveRow]
    downloads: list[DownloadRow]
    generated_at: datetime

    @property
    def counts(self) -> dict[str, int]:
        workers = [w for h in self.hives for w in h.workers]
        return {
            "hives": len(self.hives),
            "online": sum(1 for h in self.hives if h.live),
            "workers": len(workers),
            "ready": sum(1 for w in workers if w.state == WorkerState.READY),
            "waiting": sum(w.queue_waiting for w in workers),
        }


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover (the loop returns)


def human_age(seconds: int) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


def coarse_age(seconds: int) -> str:
    """An age as the live page shows it: coarse enough that a figure stays the same across
    a few ticks (a heartbeat every 5 s reads "<10s" throughout), so a page is pushed when
    what it shows changes, not every time a clock moves: "<10s", tens of seconds up to a
    minute, whole minutes up to an hour, then as human_age."""
    seconds = max(0, int(seconds))
    if seconds < 10:
        return "<10s"
    if seconds < 60:
        return f"{seconds // 10 * 10}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return human_age(seconds)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def device_names(devices: Any) -> set[str]:
    """The device names ("cpu", "cuda:0") of a hive's reported device entries."""
    return {d.name for d in (_device_row(e) for e in devices or []) if d is not None}


def _device_row(entry: dict[str, Any]) -> DeviceRow | None:
    try:
        name = str(Device.of(entry))
    except SpecError:
        return None
    total = _number(entry.get("memory_total_mb"))
    used = _number(entry.get("memory_used_mb"))
    free = _number(entry.get("memory_free_mb"))
    if used is None and total is not None and free is not None:
        used = max(0.0, total - free)
    return DeviceRow(
        name=name,
        label=str(entry.get("name") or entry.get("gpu_type") or name),
        gpu_type=str(entry.get("gpu_type") or "CPU"),
        total_mb=int(total) if total is not None else None,
        used_mb=int(used) if used is not None else None,
        utilization=_number(entry.get("utilization")),
    )


def _status(hive: Hive, now: datetime) -> tuple[str, str]:
    """The hive's state as an operator needs it (hives.selectors.hive_state, as the
    metrics show it), and why it is not serving."""
    state = hive_selectors.hive_state(
        status=hive.status,
        channel_name=hive.channel_name,
        disabled=hive.disabled,
        token_revoked=hive.token_revoked,
        last_seen_at=hive.last_seen_at,
        now=now,
    )
    if state == "revoked":
        return state, "its token was revoked (`rbee hive token` issues a new one)"
    if state == "disabled":
        return state, "disabled by an operator (`rbee hive enable` lets it back in)"
    if state == "offline":
        if hive.last_seen_at is None:
            return state, "never connected: start it with `rbee hive start`"
        return state, "its connection closed (hive stopped, or the queen restarted)"
    if state == "stale":
        return state, (
            f"no heartbeat for over {settings.RBEE_HIVE_STALE_AFTER:g}s: jobs are not sent to it"
        )
    return state, ""


def _machine(devices: list[DeviceRow]) -> str:
    gpus = [d for d in devices if d.name != CPU]
    if not gpus:
        return "CPU only"
    total = sum(d.total_mb or 0 for d in gpus)
    kinds: dict[str, int] = {}
    for d in gpus:
        kinds[d.gpu_type] = kinds.get(d.gpu_type, 0) + 1
    names = ", ".join(f"{n}x {t}" if n > 1 else t for t, n in kinds.items())
    return f"{names} · {human_bytes(total * MiB)} GPU memory" if total else names


def fleet_snapshot() -> Fleet:
    """Every hive with its devices and workers, and the latest downloads."""
    now = timezone.now()
    queues = queueing.occupancy()
    assigned = {(a.hive_id, a.model_name, a.device) for a in hive_selectors.assignment_list()}
    rows: list[HiveRow] = []
    for hive in hive_selectors.hive_list_with_workers():
        status, reason = _status(hive, now)
        devices = [d for d in (_device_row(e) for e in hive.devices or []) if d is not None]
        by_name = {d.name: d for d in devices}
        telemetry = hive.telemetry if isinstance(hive.telemetry, dict) else {}
        since = telemetry.get("ready_since")
        since = since if isinstance(since, dict) else {}
        others: list[WorkerRow] = []
        workers: list[Worker] = sorted(hive.workers.all(), key=lambda w: (w.device, w.model.name))
        for w in workers:
            started = since.get(f"{w.model.name}|{w.device}")
            uptime = None
            if w.state == WorkerState.READY and isinstance(started, list) and len(started) == 2:
                stamp = _number(started[1])
                uptime = int(now.timestamp() - stamp) if stamp is not None else None
            waiting, running = queues.get(w.model.name, (0, 0))
            row = WorkerRow(
                id=w.pk,
                model=w.model.name,
                capability=w.model.capability,
                device=w.device,
                state=w.state,
                pinned=w.pinned,
                memory_bytes=w.memory_bytes,
                inflight=w.inflight,
                slots=w.slots,
                message=w.message,
                uptime=coarse_age(uptime) if uptime is not None else "—",
                uptime_s=uptime,
                queue_waiting=waiting,
                queue_running=running,
                assigned=(hive.pk, w.model.name, w.device) in assigned,
            )
            (by_name[w.device].workers if w.device in by_name else others).append(row)
        age = int((now - hive.last_seen_at).total_seconds()) if hive.last_seen_at else None
        rows.append(
            HiveRow(
                id=hive.pk,
                name=hive.name,
                status=status,
                reason=reason,
                heartbeat_age=coarse_age(age) if age is not None else "never",
                heartbeat_age_s=age,
                version=hive.version,
                region=hive.region,
                machine=_machine(devices),
                devices=devices,
                other_workers=others,
                inflight=int(_number(telemetry.get("inflight")) or 0),
            )
        )
    downloads = [
        DownloadRow(
            id=d.pk,
            hive=d.hive.name,
            source=d.source,
            status=d.status,
            done_bytes=d.done_bytes,
            total_bytes=d.total_bytes,
            message=d.message,
            path=d.path,
        )
        for d in ModelDownload.objects.select_related("hive").order_by("-created_at", "-pk")[
            :RECENT_DOWNLOADS
        ]
    ]
    return Fleet(hives=rows, downloads=downloads, generated_at=now)


def render_fleet(fleet: Fleet | None = None, *, csrf_token: str = "") -> str:
    """The live part of the page (`#fleet-live`), as the page and each push show it."""
    if not csrf_token:
        return render_parts(fleet).full
    return render_to_string(
        "ui/fleet_live.html",
        {"fleet": fleet or fleet_snapshot(), "csrf_token": csrf_token},
    )


@dataclass(frozen=True)
class FleetParts:
    """`#fleet-live` in pieces, each an element with its own id, in page order; `updated`
    (the "Updated HH:MM:SS" line) is left out of every comparison: a push that differs only
    by its time is no push."""

    parts: tuple[tuple[str, str], ...]  # (element id, html)
    updated: str
    seq: int = 0  # the order of renders in this process (a newer one wins)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(pid for pid, _ in self.parts)

    @property
    def full(self) -> str:
        body = "".join(html for _, html in self.parts)
        return f'<div id="fleet-live" class="stack" aria-live="off">{body}{self.updated}</div>'

    def changed_since(self, before: FleetParts | None) -> str | None:
        """What to send to a page that shows `before`: the whole `#fleet-live` when pieces
        came or went (or it shows nothing yet), only the changed pieces (and the time) when
        some changed, None when none did."""
        if before is None or before.ids != self.ids:
            return self.full
        changed = [
            html
            for (_, html), (_, old) in zip(self.parts, before.parts, strict=True)
            if html != old
        ]
        if not changed:
            return None
        return "".join(changed) + self.updated


# hive id -> (its row, its card) as last rendered by render_parts: a card is rendered again
# only when its row (what it shows) changed. render_parts holds _render_lock throughout.
_cards: dict[int, tuple[HiveRow, str]] = {}
_seq = 0
_render_lock = threading.Lock()


def render_parts(fleet: Fleet | None = None) -> FleetParts:
    """The live part of the page in pieces (FleetParts), for pushes: without a CSRF token
    (the page's script adds its own to a form that is sent), so that every socket gets the
    same string. A hive card that shows what it showed last time is not rendered again."""
    fleet = fleet or fleet_snapshot()
    with _render_lock:
        return _render_parts(fleet)


def _render_parts(fleet: Fleet) -> FleetParts:
    global _seq
    context: dict[str, Any] = {"fleet": fleet, "csrf_token": ""}
    kpis = render_to_string("ui/fleet_kpis.html", context).strip()
    parts: list[tuple[str, str]] = [("fleet-kpis", kpis)]
    seen: set[int] = set()
    for row in fleet.hives:
        seen.add(row.id)
        cached = _cards.get(row.id)
        if cached is not None and cached[0] == row:
            card = cached[1]
        else:
            card = render_to_string("ui/fleet_hive.html", {"hive": row, "csrf_token": ""}).strip()
            _cards[row.id] = (row, card)
        parts.append((f"hive-{row.name}", card))
    for gone in set(_cards) - seen:
        del _cards[gone]
    if not fleet.hives:
        parts.append(("fleet-empty", render_to_string("ui/fleet_empty.html", context).strip()))
    parts.append(("downloads", render_to_string("ui/fleet_downloads.html", context).strip()))
    _seq += 1
    return FleetParts(
        parts=tuple(parts),
        updated=render_to_string("ui/fleet_updated.html", context).strip(),
        seq=_seq,
    )
