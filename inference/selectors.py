"""Reads for the inference app: scheduler script versions, the charts' request metrics."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet, Sum

from inference.models import RequestStat, SchedulerScript
from inference.stats import Sums
from kernel.timebuckets import EpochBucket


def scheduler_script_current() -> SchedulerScript | None:
    """The script in force (the newest stored version), or None."""
    return SchedulerScript.objects.first()


def scheduler_script_get(*, version: int) -> SchedulerScript | None:
    return SchedulerScript.objects.filter(pk=version).first()


def scheduler_script_history(*, limit: int = 50) -> QuerySet[SchedulerScript]:
    """The stored versions, newest first (without their text)."""
    return SchedulerScript.objects.defer("source").order_by("-id")[:limit]


def request_stats_between(*, since: datetime, until: datetime) -> QuerySet[RequestStat]:
    """The per-minute sums of minutes in [since, until), oldest first."""
    return RequestStat.objects.filter(minute__gte=since, minute__lt=until).order_by(
        "minute", "model"
    )


def request_stat_sums(
    *, since: datetime, until: datetime, step: int | None
) -> list[tuple[int, str, Sums]]:
    """The per-minute sums of minutes in [since, until) added up by the database per
    (bucket of `step` seconds, model), oldest first: (bucket start in unix seconds, model,
    sums); `step` None: per model over the whole span (bucket 0). A chart over 7 days reads
    one row per hour and model, not 10,080 minutes per model."""
    rows = RequestStat.objects.filter(minute__gte=since, minute__lt=until)
    if step is not None:
        rows = rows.annotate(bucket=EpochBucket("minute", step))
        keys = ["bucket", "model"]
    else:
        keys = ["model"]
    summed = (
        rows.values(*keys)
        .annotate(
            s_requests=Sum("requests"),
            s_errors=Sum("errors"),
            s_ttft_ms_sum=Sum("ttft_ms_sum"),
            s_ttft_count=Sum("ttft_count"),
            s_output_tokens=Sum("output_tokens"),
            s_generation_seconds=Sum("generation_seconds"),
            s_queue_wait_ms_sum=Sum("queue_wait_ms_sum"),
        )
        .order_by(*keys)
    )
    return [
        (
            int(row.get("bucket", 0)),
            row["model"],
            Sums(
                requests=int(row["s_requests"]),
                errors=int(row["s_errors"]),
                ttft_ms_sum=float(row["s_ttft_ms_sum"]),
                ttft_count=int(row["s_ttft_count"]),
                output_tokens=int(row["s_output_tokens"]),
                generation_seconds=float(row["s_generation_seconds"]),
                queue_wait_ms_sum=float(row["s_queue_wait_ms_sum"]),
            ),
        )
        for row in summed
    ]
