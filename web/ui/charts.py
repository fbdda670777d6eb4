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


def _window(rng: Range, now: datetime) -> tuple[list[int], datetime, datetime]:
    xs = buckets(rng, now)
    return (
        xs,
        datetime.fromtimestamp(xs[0], tz=UTC),
        datetime.fromtimestamp(xs[-1] + rng.step, tz=UTC),
    )


def chart_data(metric: str, range_key: str, now: datetime | None = None) -> dict[str, Any]:
    """One chart in charts.js's format: {"x", "unit", "series": [{"label", "values"}]}.
    The database groups the rows into the range's buckets: a week of one-minute samples
    comes back as one row per device and hour."""
    rng = RANGES[range_key]
    xs, since, until = _window(rng, now or timezone.now())
    series: list[dict[str, Any]] = []
    if metric == "memory":
        used: dict[str, list[float | None]] = {}
        for hive, device, bucket, mb in hive_selectors.device_memory_buckets(
            since=since, until=until, step=rng.step
        ):
            row = used.setdefault(f"{hive}/{device}", [None] * len(xs))
            row[(bucket - xs[0]) // rng.step] = round(mb / 1024, 2)
        series = [{"label": k, "values": used[k]} for k in sorted(used)]
    else:
        sums: dict[str, list[Sums]] = {}
        for model, bucket, s in inference_selectors.request_stat_buckets(
            since=since, until=until, step=rng.step
        ):
            sums.setdefault(model, [Sums() for _ in xs])[(bucket - xs[0]) // rng.step] = s
        for model in sorted(sums):
            series.append(
                {"label": model, "values": [_value(metric, s, rng.step) for s in sums[model]]}
            )
    return {"x": xs, "unit": METRICS[metric].unit, "series": series}


def totals(range_key: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per model over the whole range: requests, errors and the four averages."""
    rng = RANGES[range_key]
    _, since, until = _window(rng, now or timezone.now())
    per = inference_selectors.request_stat_totals(since=since, until=until)
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
            rows.append({"time": datetime.fromtimestamp(x, tz=UTC).strftime(fmt), "cells": cells})
    return {"labels": [s["label"] for s in data["series"]], "rows": rows}


def _range_of(request: HttpRequest) -> str:
    key = request.GET.get("range", DEFAULT_RANGE)
    return key if key in RANGES else DEFAULT_RANGE


def _query(request: HttpRequest) -> tuple[str, str] | HttpResponse:
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
    return metric, range_key


@operator_page()
@require_GET
def charts_page(request: HttpRequest) -> HttpResponse:
    """GET /ui/charts?range=1h. The page computes only the totals: each chart fetches
    its figures (/ui/charts/data) and each table its own when opened (/ui/charts/table),
    so no figures are computed twice for one view."""
    range_key = _range_of(request)
    rng = RANGES[range_key]
    charts = [
        {
            "key": key,
            "metric": metric,
            "src": f"/ui/charts/data?metric={key}&range={range_key}",
            "table_src": f"/ui/charts/table?metric={key}&range={range_key}",
        }
        for key, metric in METRICS.items()
    ]
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
            "totals": totals(range_key),
            "step_minutes": rng.step // 60,
        },
    )


@operator_page()
@require_GET
def charts_data(request: HttpRequest) -> HttpResponse:
    """GET /ui/charts/data?metric=rps|ttft|tps|queue|memory&range=15m|1h|6h|24h|7d."""
    query = _query(request)
    if isinstance(query, HttpResponse):
        return query
    return JsonResponse(chart_data(*query))


@operator_page()
@require_GET
def charts_table(request: HttpRequest) -> HttpResponse:
    """GET /ui/charts/table?metric=...&range=...: the chart's figures as an HTML table
    (the fragment a chart's "Table of these figures" loads when opened)."""
    query = _query(request)
    if isinstance(query, HttpResponse):
        return query
    metric, range_key = query
    rng = RANGES[range_key]
    return render(
        request,
        "ui/charts_table.html",
        {
            "key": metric,
            "metric": METRICS[metric],
            "range": rng,
            "table": table(chart_data(metric, range_key), rng.step),
        },
    )


urlpatterns = [
    path("charts", charts_page, name="ui-charts"),
    path("charts/data", charts_data, name="ui-charts-data"),
    path("charts/table", charts_table, name="ui-charts-table"),
]
