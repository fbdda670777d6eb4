"""/ui/charts: requests per second, time to first token, tokens per second and queue wait
per model, and memory used per device, over a chosen range (15 min to 7 days); any
operator. The figures come from the per-minute sums every queen flushes
(inference.models.RequestStat, inference/stats.py) and the devices' per-minute samples
(hives.models.DeviceSample), grouped into buckets of the range's step; each chart's JSON
(/ui/charts/data, the format of web/static/web/charts.js) and the table beside it come
from the same function."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html_join
from django.views.decorators.http import require_GET

from hives import selectors as hive_selectors
from inference import selectors as inference_selectors
from inference.stats import Sums
from web.auth import operator_page


@dataclass(frozen=True)
class Range:
    label: str
    seconds: int
    step: int  # seconds per bucket (a whole number of minutes)


RANGES: dict[str, Range] = {
    "15m": Range("15 minutes", 15 * 60, 60),
    "1h": Range("1 hour", 3600, 60),
    "6h": Range("6 hours", 6 * 3600, 5 * 60),
    "24h": Range("24 hours", 24 * 3600, 15 * 60),
    "7d": Range("7 days", 7 * 24 * 3600, 3600),
}
DEFAULT_RANGE = "1h"
NO_FIGURE = "\u2013"  # an en dash, in a table's empty cell


@dataclass(frozen=True)
class Metric:
    title: str
    unit: str
    what: str  # for the chart's aria-label


METRICS: dict[str, Metric] = {
    "rps": Metric("Requests per second", "req/s", "requests per second per model"),
    "ttft": Metric("Time to first token", "ms", "average time to first token per model"),
    "tps": Metric("Tokens per second", "tok/s", "output tokens per second of generation"),
    "queue": Metric("Queue wait", "ms", "average wait for a free worker per model"),
    "memory": Metric("Memory used per device", "GiB", "memory used per device, GiB"),
}


def buckets(rng: Range, now: datetime) -> list[int]:
    """The buckets' start times (unix seconds), oldest first; the last holds `now`."""
    last = int(now.timestamp()) // rng.step * rng.step
    n = rng.seconds // rng.step
    return [last - (n - 1 - i) * rng.step for i in range(n)]


def _value(metric: str, s: Sums, step: int) -> float | None:
    if metric == "rps":
        return round(s.requests / step, 4)
    if metric == "ttft":
        return round(s.ttft_ms_sum / s.ttft_count, 1) if s.ttft_count else None
    if metric == "tps":
        return round(s.output_tokens / s.generation_seconds, 1) if s.generation_seconds else None
    if metric == "queue":
        return round(s.queue_wait_ms_sum / s.requests, 1) if s.requests else None
    raise ValueError(metric)


def _span(rng: Range, now: datetime) -> tuple[list[int], datetime, datetime]:
    xs = buckets(rng, now)
    return (
        xs,
        datetime.fromtimestamp(xs[0], tz=UTC),
        datetime.fromtimestamp(xs[-1] + rng.step, tz=UTC),
    )


StatRows = list[tuple[int, str, Sums]]


def _stat_rows(rng: Range, now: datetime) -> StatRows:
    """The request sums per (bucket, model) of the range, added up by the database."""
    _, since, until = _span(rng, now)
    return inference_selectors.request_stat_sums(since=since, until=until, step=rng.step)


def chart_data(
    metric: str, range_key: str, now: datetime | None = None, *, stats: StatRows | None = None
) -> dict[str, Any]:
    """One chart in charts.js's format: {"x", "unit", "series": [{"label", "values"}]}.
    `stats`: the range's request sums when the caller already read them (the page draws
    four charts and the totals from one read)."""
    rng = RANGES[range_key]
    now = now or timezone.now()
    xs, since, until = _span(rng, now)
    series: list[dict[str, Any]] = []
    if metric == "memory":
        used: dict[str, list[float | None]] = {}
        for hive, device, bucket, peak_mb in hive_selectors.device_memory_peaks(
            since=since, until=until, step=rng.step
        ):
            row = used.setdefault(f"{hive}/{device}", [None] * len(xs))
            row[(bucket - xs[0]) // rng.step] = round(peak_mb / 1024, 2)
        series = [{"label": k, "values": used[k]} for k in sorted(used)]
    else:
        sums: dict[str, list[Sums]] = {}
        for bucket, model, s in _stat_rows(rng, now) if stats is None else stats:
            per = sums.setdefault(model, [Sums() for _ in xs])
            per[(bucket - xs[0]) // rng.step].add(s)
        for model in sorted(sums):
            series.append(
                {"label": model, "values": [_value(metric, s, rng.step) for s in sums[model]]}
            )
    return {"x": xs, "unit": METRICS[metric].unit, "series": series}


def totals(
    range_key: str, now: datetime | None = None, *, stats: StatRows | None = None
) -> list[dict[str, Any]]:
    """Per model over the whole range: requests, errors and the four averages."""
    rng = RANGES[range_key]
    per: dict[str, Sums] = {}
    for _, model, s in _stat_rows(rng, now or timezone.now()) if stats is None else stats:
        per.setdefault(model, Sums()).add(s)
    return [
        {
            "model": model,
            "requests": s.requests,
            "errors": s.errors,
            "rps": _value("rps", s, rng.seconds),
            "ttft": _value("ttft", s, rng.step),
            "tps": _value("tps", s, rng.step),
            "queue": _value("queue", s, rng.step),
        }
        for model, s in sorted(per.items())
    ]


def table(data: dict[str, Any], step: int) -> dict[str, Any]:
    """The chart's figures as table rows: the buckets where any series has a figure."""
    fmt = "%H:%M" if step < 3600 else "%m-%d %H:%M"
    rows = []
    for i, x in enumerate(data["x"]):
        cells = [s["values"][i] for s in data["series"]]
        if any(v not in (None, 0, 0.0) for v in cells):
            rows.append(
                {
                    "time": datetime.fromtimestamp(x, tz=UTC).strftime(fmt),
                    "cells": cells,
                    # The row's cells as the template wrote them (a loop over the cells,
                    # a dash for None), joined here: at 200 devices x 168 hours the loop was most
                    # of the page's time.
                    "cells_html": format_html_join(
                        "",
                        "<td>{}</td>",
                        ((NO_FIGURE if v is None else localize(v),) for v in cells),
                    ),
                }
            )
    return {"labels": [s["label"] for s in data["series"]], "rows": rows}


def _range_of(request: HttpRequest) -> str:
    key = request.GET.get("range", DEFAULT_RANGE)
    return key if key in RANGES else DEFAULT_RANGE


@operator_page()
@require_GET
def charts_page(request: HttpRequest) -> HttpResponse:
    """GET /ui/charts?range=1h."""
    range_key = _range_of(request)
    rng = RANGES[range_key]
    now = timezone.now()
    stats = _stat_rows(rng, now)  # one read for the four request charts and the totals
    charts = []
    for key, metric in METRICS.items():
        data = chart_data(key, range_key, now, stats=stats)
        charts.append(
            {
                "key": key,
                "metric": metric,
                "src": f"/ui/charts/data?metric={key}&range={range_key}",
                "table": table(data, rng.step),
            }
        )
    return render(
        request,
        "ui/charts.html",
        {
            "face": "ui",
            "section": "charts",
            "title": "Charts · rbee",
            "ranges": RANGES,
            "range_key": range_key,
            "range": rng,
            "charts": charts,
            "totals": totals(range_key, now, stats=stats),
            "step_minutes": rng.step // 60,
        },
    )


@operator_page()
@require_GET
def charts_data(request: HttpRequest) -> HttpResponse:
    """GET /ui/charts/data?metric=rps|ttft|tps|queue|memory&range=15m|1h|6h|24h|7d."""
    metric = request.GET.get("metric", "")
    range_key = request.GET.get("range", DEFAULT_RANGE)
    if metric not in METRICS or range_key not in RANGES:
        return JsonResponse(
            {
                "error": f"metric is one of {', '.join(METRICS)} and range one of "
                f"{', '.join(RANGES)}"
            },
            status=400,
        )
    return JsonResponse(chart_data(metric, range_key))


urlpatterns = [
    path("charts", charts_page, name="ui-charts"),
    path("charts/data", charts_data, name="ui-charts-data"),
]
