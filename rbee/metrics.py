"""/metrics: everything Prometheus scrapes from a queen, in one response (text format).

* django-prometheus' series (prometheus_client's default registry): requests, latency
  and responses by view and method (its middleware for the site, rbee/api_asgi.py for the
  API), database queries and errors (its database backends), cache gets and hits (its
  cache backend), and the process (CPU, memory, file descriptors);
* this queen process's request path (inference/metrics.py): requests by model, endpoint
  and status class, durations, time to first token, inter-token latency, queue wait and
  depth, tokens by kind, refusals by reason, the scheduler's decisions and script errors;
* the fleet and the books, read from the database when scraped, in one trip off the
  event loop (FleetCollector): hives up, connected and their heartbeat age, each device's
  memory and utilisation, each worker's state, the Stripe outbox's backlog and lag, how
  far the audit log is signed and how old its latest checkpoint is, GDPR requests past
  their deadline. Hives report their devices and workers in heartbeats over the socket
  they open to the queen, so they reach Prometheus through the queen (they may be behind
  NAT) and need no scraping of their own.

With several queens, the per-process series differ by queen (add them up) and the fleet's
are the same from every queen (take their max): see README "Metrics". Labels never name a
tenant, a key or a user. In production (RBEE_PRODUCTION=1) only RBEE_METRICS_TOKEN's
bearer and fleet operators may read it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import prometheus_client
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from billing import selectors as billing_selectors
from gdpr import selectors as gdpr_selectors
from gdpr.sinks import get_sink
from hives import selectors as hive_selectors
from hives.spec import Device, SpecError
from inference import metrics as request_metrics
from inference.errors import APIError
from kernel import __version__
from kernel.aio import db, db_shared
from rbee.views import holds_metrics_token, may_see_internals

logger = logging.getLogger("rbee.metrics")

MiB = 1024 * 1024
CHECKPOINT_READ_SECONDS = 30.0
"""How long the latest audit checkpoint read from its sink is reused: listing a sink
(a directory of one file per minute, or an S3 bucket) is too dear for every scrape,
and checkpoints come once a minute at most."""


@dataclass(frozen=True)
class Checkpointed:
    """The latest signed audit checkpoint: its size and time (None: there is none)."""

    size: int
    time: datetime | None


class _CheckpointCache:
    """The latest checkpoint, read from the sink at most every CHECKPOINT_READ_SECONDS.
    The first read is done by the scrape that needs it; later ones in a thread of their
    own while scrapes go on with the value at hand, so a slow sink (S3 lists every
    checkpoint) never holds a scrape up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Checkpointed | None = None
        self._read_at: float | None = None  # None: never read
        self._reading = False

    def get(self) -> Checkpointed | None:
        """The latest checkpoint; None when the sink cannot be read (logged), so no audit
        series claims what is not known."""
        with self._lock:
            first = self._read_at is None
            due = first or time.monotonic() - (self._read_at or 0.0) >= CHECKPOINT_READ_SECONDS
            if due and not first and not self._reading:
                self._reading = True
                threading.Thread(target=self._read, name="metrics-checkpoint", daemon=True).start()
            if not first:
                return self._value
        self._read()
        return self._value

    def _read(self) -> None:
        try:
            latest = get_sink().latest()
        except Exception as exc:
            logger.warning("metrics: the audit checkpoint sink could not be read: %s", exc)
            value = None
        else:
            value = (
                Checkpointed(latest.size, datetime.fromisoformat(latest.time))
                if latest is not None
                else Checkpointed(0, None)
            )
        with self._lock:
            self._value = value
            self._read_at = time.monotonic()
            self._reading = False

    def forget(self) -> None:
        """Read the sink afresh at the next scrape (tests, after writing a checkpoint)."""
        with self._lock:
            self._read_at = None


checkpoints = _CheckpointCache()

# The text is rendered in a thread of its own, not the executor the request path's
# database calls share: when those calls block (a database incident), a scrape still
# renders and says so (rbee_metrics_fleet_up 0). Scrapes take turns on it.
_renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-render")


@dataclass
class Fleet:
    """What the scrape read from the database (read_fleet: one trip, seven queries)."""

    at: datetime
    hives: list[hive_selectors.FleetHive]
    workers: list[hive_selectors.FleetWorker]
    models: list[str]
    outbox_pending: int
    outbox_oldest: datetime | None
    overdue: dict[str, int]
    checkpoint: Checkpointed | None
    audit: gdpr_selectors.AuditSigning | None


def read_fleet() -> Fleet:
    """The fleet and the books as the database has them now. Sync: call through db()."""
    hives, workers = hive_selectors.fleet_metrics()
    pending, oldest = billing_selectors.meter_outbox_backlog()
    checkpoint = checkpoints.get()
    audit = (
        gdpr_selectors.audit_signing(signed_size=checkpoint.size)
        if checkpoint is not None
        else None
    )
    return Fleet(
        at=timezone.now(),
        hives=hives,
        workers=workers,
        models=hive_selectors.catalog_names(),
        outbox_pending=pending,
        outbox_oldest=oldest,
        overdue=gdpr_selectors.overdue_counts(),
        checkpoint=checkpoint,
        audit=audit,
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _age(now: datetime, then: datetime | None) -> float | None:
    return max(0.0, (now - then).total_seconds()) if then is not None else None


class FleetCollector(Collector):
    """The fleet's gauges from one read (None: the database could not be read, and only
    rbee_metrics_fleet_up 0 says so)."""

    def __init__(self, fleet: Fleet | None) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("rbee_build_info", "This queen's rbee version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        fleet = self.fleet
        yield GaugeMetricFamily(
            "rbee_metrics_fleet_up",
            "Whether this scrape could read the fleet from the database (0: its series are absent)",
            value=1 if fleet is not None else 0,
        )
        if fleet is None:
            return
        yield from self._hives(fleet)
        yield from self._devices(fleet)
        yield from self._workers(fleet)
        yield from self._books(fleet)

    def _hives(self, fleet: Fleet) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily(
            "rbee_hives",
            "Hives by state (online, stale: no heartbeat lately, offline, disabled, revoked)",
            labels=["state"],
        )
        counts = dict.fromkeys(hive_selectors.HIVE_STATES, 0)
        for h in fleet.hives:
            counts[h.state] += 1
        for state, n in counts.items():
            states.add_metric([state], n)
        yield states
        up = GaugeMetricFamily(
            "rbee_hive_up",
            "1 while the hive serves (connected, heartbeats fresh); hives that never connected, "
            "disabled and revoked ones are left out",
            labels=["hive"],
        )
        connected = GaugeMetricFamily(
            "rbee_hive_connected", "1 while a queen holds the hive's socket", labels=["hive"]
        )
        age = GaugeMetricFamily(
            "rbee_hive_heartbeat_age_seconds",
            "Seconds since the hive's last heartbeat",
            labels=["hive"],
        )
        info = GaugeMetricFamily(
            "rbee_hive_info",
            "A hive's operator-set region and its rbee version",
            labels=["hive", "region", "version"],
        )
        for h in fleet.hives:
            info.add_metric([h.name, h.region, h.version], 1)
            if h.last_seen_at is None or h.state in ("disabled", "revoked"):
                continue
            up.add_metric([h.name], 1 if h.state == "online" else 0)
            connected.add_metric([h.name], 1 if h.connected else 0)
            seen = _age(fleet.at, h.last_seen_at)
            if seen is not None:
                age.add_metric([h.name], seen)
        yield from (up, connected, age, info)

    def _devices(self, fleet: Fleet) -> Iterator[GaugeMetricFamily]:
        labels = ["hive", "device"]
        used = GaugeMetricFamily(
            "rbee_device_memory_used_bytes",
            "Device memory in use, as its hive reported",
            labels=labels,
        )
        total = GaugeMetricFamily(
            "rbee_device_memory_total_bytes",
            "Device memory in all, as its hive reported",
            labels=labels,
        )
        util = GaugeMetricFamily(
            "rbee_device_utilization_ratio",
            "Device utilisation (0-1), as its hive reported",
            labels=labels,
        )
        info = GaugeMetricFamily(
            "rbee_device_info",
            "A device's name and GPU type, as its hive reported",
            labels=[*labels, "name", "gpu_type"],
        )
        for h in fleet.hives:
            if not h.connected:  # an offline hive's last report is no measurement
                continue
            seen: set[str] = set()
            for entry in h.devices:
                if not isinstance(entry, dict):
                    continue
                try:
                    device = str(Device.of(entry))
                except SpecError:
                    continue
                if device in seen:
                    continue
                seen.add(device)
                key = [h.name, device]
                info.add_metric(
                    [*key, str(entry.get("name") or device), str(entry.get("gpu_type") or "")], 1
                )
                mb_total = _number(entry.get("memory_total_mb"))
                mb_used = _number(entry.get("memory_used_mb"))
                mb_free = _number(entry.get("memory_free_mb"))
                if mb_used is None and mb_total is not None and mb_free is not None:
                    mb_used = max(0.0, mb_total - mb_free)
                if mb_total is not None:
                    total.add_metric(key, mb_total * MiB)
                if mb_used is not None:
                    used.add_metric(key, mb_used * MiB)
                percent = _number(entry.get("utilization"))
                if percent is not None:
                    util.add_metric(key, min(max(percent, 0.0), 100.0) / 100)
        yield from (used, total, util, info)

    def _workers(self, fleet: Fleet) -> Iterator[GaugeMetricFamily]:
        labels = ["hive", "device", "model"]
        state = GaugeMetricFamily(
            "rbee_worker_state",
            "1 for each worker of a connected hive, labelled with its state as the hive reported "
            "(starting, ready, unloaded, stopping, stopped, failed, refused)",
            labels=[*labels, "state"],
        )
        memory = GaugeMetricFamily(
            "rbee_worker_memory_bytes", "Memory a worker's model holds on its device", labels=labels
        )
        label = request_metrics.MODELS.label
        for w in fleet.workers:
            key = [w.hive, w.device, label(w.model)]
            state.add_metric([*key, w.state], 1)
            memory.add_metric(key, max(0, w.memory_bytes))
        yield from (state, memory)

    def _books(self, fleet: Fleet) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "rbee_stripe_outbox_pending",
            "Stripe meter events not sent yet",
            value=fleet.outbox_pending,
        )
        yield GaugeMetricFamily(
            "rbee_stripe_outbox_lag_seconds",
            "Age of the oldest Stripe meter event not sent yet (0: none waits)",
            value=_age(fleet.at, fleet.outbox_oldest) or 0.0,
        )
        overdue = GaugeMetricFamily(
            "rbee_gdpr_requests_overdue",
            "Open data-subject requests past their deadline (Art. 12(3) GDPR)",
            labels=["kind"],
        )
        for kind, n in sorted(fleet.overdue.items()):
            overdue.add_metric([kind], n)
        yield overdue
        if fleet.checkpoint is None or fleet.audit is None:
            return  # the sink could not be read: nothing is claimed
        yield GaugeMetricFamily(
            "rbee_audit_tree_size",
            "Audit events sequenced into the Merkle tree",
            value=fleet.audit.tree_size,
        )
        yield GaugeMetricFamily(
            "rbee_audit_checkpoint_size",
            "Audit events inside the latest signed checkpoint",
            value=fleet.checkpoint.size,
        )
        if fleet.checkpoint.time is not None:
            yield GaugeMetricFamily(
                "rbee_audit_checkpoint_age_seconds",
                "Seconds since the latest signed audit checkpoint (written when the log grew)",
                value=_age(fleet.at, fleet.checkpoint.time) or 0.0,
            )
        yield GaugeMetricFamily(
            "rbee_audit_oldest_unsigned_event_age_seconds",
            "Age of the oldest audit event not inside a signed checkpoint (0: all are)",
            value=_age(fleet.at, fleet.audit.oldest_unsigned_at) or 0.0,
        )


def render(fleet: Fleet | None) -> bytes:
    """The whole exposition: django-prometheus' and the process's, this queen's request
    path, and the fleet. CPU work only (text for thousands of series): run it off the loop."""
    fleet_registry = CollectorRegistry(auto_describe=False)
    fleet_registry.register(FleetCollector(fleet))
    return b"".join(
        (
            generate_latest(prometheus_client.REGISTRY),
            generate_latest(request_metrics.REGISTRY),
            generate_latest(fleet_registry),
        )
    )


async def scrape() -> bytes:
    """Read the fleet (one trip to the database), then render off the event loop. A
    database that cannot be read leaves the fleet's series out, not the whole answer;
    one that does not answer holds one thread for every scrape meanwhile (db_shared)."""
    fleet: Fleet | None
    try:
        fleet = await db_shared("metrics.fleet", read_fleet)
    except Exception as exc:
        logger.warning("metrics: the fleet could not be read (%s); serving the rest", exc)
        fleet = None
    else:  # the model labels follow the catalog (inference.metrics.ModelLabels)
        request_metrics.MODELS.replace(fleet.models)
    return await asyncio.get_running_loop().run_in_executor(_renderer, render, fleet)


async def metrics(request: HttpRequest) -> HttpResponse:
    """The series; in production only for RBEE_METRICS_TOKEN's holder and fleet operators."""
    if settings.RBEE_PRODUCTION and not holds_metrics_token(request):
        try:
            allowed = await db(may_see_internals, request)
        except Exception as exc:  # a staff session needs the database
            logger.warning("metrics: could not check the caller (%s)", exc)
            allowed = False
        if not allowed:
            return APIError(
                401,
                "The metrics need 'Authorization: Bearer <RBEE_METRICS_TOKEN>' or a staff session.",
                code="unauthorized",
            ).response()
    return HttpResponse(await scrape(), content_type=CONTENT_TYPE_LATEST)
