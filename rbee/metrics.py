"""Prometheus metrics at /metrics (text exposition format), from this queen process."""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gdpr import selectors as gdpr_selectors
from inference import queueing, scheduler
from inference.errors import APIError
from kernel.aio import db
from rbee.views import may_see_internals


class SchedulerCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        decisions = CounterMetricFamily(
            "rbee_scheduler_decisions", "Routing decisions, by who decided", labels=["source"]
        )
        for source in ("script", "default"):
            decisions.add_metric([source], scheduler.counters[f"{source}_decisions"])
        yield decisions
        for name, key, doc in (
            ("rbee_scheduler_fallbacks", "fallbacks", "Script answers replaced by the default"),
            ("rbee_scheduler_script_errors", "script_errors", "Scheduler script runtime errors"),
            ("rbee_scheduler_admissions", "admissions", "Requests admitted by should_admit"),
            ("rbee_scheduler_rejections", "rejections", "Requests refused by should_admit"),
            ("rbee_scheduler_timeouts", "timeouts", "Script calls past RBEE_SCHEDULER_TIMEOUT_MS"),
        ):
            yield CounterMetricFamily(name, doc, value=scheduler.counters[key])
        waiting = GaugeMetricFamily(
            "rbee_queue_waiting", "Requests waiting for a worker", labels=["model"]
        )
        running = GaugeMetricFamily(
            "rbee_queue_running", "Requests holding a worker slot", labels=["model"]
        )
        for model, (n_waiting, n_running) in sorted(queueing.occupancy().items()):
            waiting.add_metric([model], n_waiting)
            running.add_metric([model], n_running)
        yield waiting
        yield running
        version = GaugeMetricFamily(
            "rbee_scheduler_script_version", "Version of the scheduler script in force (0: none)"
        )
        version.add_metric([], scheduler.version_in_force())
        yield version


class GdprCollector(Collector):
    """Data-subject requests past their Art. 12(3) deadline, by kind (export, erase).
    The counts are read from the database by the view (async) just before collecting."""

    def __init__(self) -> None:
        self.overdue: dict[str, int] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "rbee_gdpr_requests_overdue",
            "Open data-subject requests past their deadline (Art. 12(3) GDPR)",
            labels=["kind"],
        )
        for kind, n in sorted(self.overdue.items()):
            gauge.add_metric([kind], n)
        yield gauge


gdpr_collector = GdprCollector()
registry = CollectorRegistry()
registry.register(SchedulerCollector())
registry.register(gdpr_collector)


async def metrics(request: HttpRequest) -> HttpResponse:
    """The series; in production only for RBEE_METRICS_TOKEN's holder and staff."""
    if settings.RBEE_PRODUCTION and not await db(may_see_internals, request):
        return APIError(
            401,
            "The metrics need 'Authorization: Bearer <RBEE_METRICS_TOKEN>' or a staff session.",
            code="unauthorized",
        ).response()
    gdpr_collector.overdue = await db(gdpr_selectors.overdue_counts)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
