"""Reads for the inference app: scheduler script versions, the charts' request metrics,
the Responses API's stored responses (always through their tenant), video jobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from inference.models import RequestStat, SchedulerScript, StoredResponse, Video, VideoAsset
from inference.stats import Sums
from kernel.sql import EpochBucket


def scheduler_script_current() -> SchedulerScript | None:
    """The script in force (the newest stored version), or None."""
    return SchedulerScript.objects.first()


def scheduler_script_get(*, version: int) -> SchedulerScript | None:
    return SchedulerScript.objects.filter(pk=version).first()


def scheduler_script_history(*, limit: int = 50) -> QuerySet[SchedulerScript]:
    """The stored versions, newest first (without their text)."""
    return SchedulerScript.objects.defer("source").order_by("-id")[:limit]


_SUMS = {f.name: f"sum_{f.name}" for f in fields(Sums)}


def _sums(row: Mapping[str, Any]) -> Sums:
    """Sums from a grouped row (PostgreSQL sums bigints as numeric: back to int)."""
    return Sums(
        requests=int(row["sum_requests"] or 0),
        errors=int(row["sum_errors"] or 0),
        ttft_ms_sum=float(row["sum_ttft_ms_sum"] or 0.0),
        ttft_count=int(row["sum_ttft_count"] or 0),
        output_tokens=int(row["sum_output_tokens"] or 0),
        generation_seconds=float(row["sum_generation_seconds"] or 0.0),
        queue_wait_ms_sum=float(row["sum_queue_wait_ms_sum"] or 0.0),
    )


def _summed(since: datetime, until: datetime) -> QuerySet[RequestStat]:
    return RequestStat.objects.filter(minute__gte=since, minute__lt=until).order_by()


def request_stat_buckets(
    *, since: datetime, until: datetime, step: int
) -> list[tuple[str, int, Sums]]:
    """Each model's sums per `step`-second bucket of [since, until), added up by the
    database: (model, bucket start in unix seconds, sums)."""
    rows = (
        _summed(since, until)
        .annotate(bucket=EpochBucket("minute", step))
        .values("model", "bucket")
        .annotate(**{alias: Sum(name) for name, alias in _SUMS.items()})
    )
    return [(row["model"], int(row["bucket"]), _sums(row)) for row in rows]


def request_stat_totals(*, since: datetime, until: datetime) -> dict[str, Sums]:
    """Each model's sums over [since, until), added up by the database."""
    rows = (
        _summed(since, until)
        .values("model")
        .annotate(**{alias: Sum(name) for name, alias in _SUMS.items()})
    )
    return {row["model"]: _sums(row) for row in rows}


def stored_response_get(*, tenant_id: int, response_id: str) -> StoredResponse | None:
    """The tenant's stored response of that id, unexpired; None for another tenant's."""
    return StoredResponse.objects.filter(
        tenant_id=tenant_id, response_id=response_id, expires_at__gt=timezone.now()
    ).first()


# --- video jobs (inference/videos.py) ---------------------------------------------------


def _videos(tenant_id: int) -> QuerySet[Video]:
    """The tenant's videos that have not expired (the sweep deletes those soon after)."""
    return Video.objects.filter(tenant_id=tenant_id).exclude(expires_at__lt=timezone.now())


def video_get(*, tenant_id: int, video_id: str) -> Video | None:
    return _videos(tenant_id).filter(id=video_id).first()


def video_list(
    *, tenant_id: int, limit: int, order: str, after: str | None
) -> tuple[list[Video], bool]:
    """A page of the tenant's videos, newest first (order 'desc') or oldest first, after
    the video `after` (OpenAI's cursor); and whether more follow. An `after` that names
    no video of the tenant gives an empty page."""
    videos = _videos(tenant_id)
    desc = order == "desc"
    if after:
        cursor = videos.filter(id=after).values_list("created_at", "id").first()
        if cursor is None:
            return [], False
        at, vid = cursor
        if desc:
            videos = videos.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=vid))
        else:
            videos = videos.filter(Q(created_at__gt=at) | Q(created_at=at, id__gt=vid))
    ordering = ("-created_at", "-id") if desc else ("created_at", "id")
    page = list(videos.order_by(*ordering)[: limit + 1])
    return page[:limit], len(page) > limit


def video_asset(*, tenant_id: int, video_id: str, variant: str) -> VideoAsset | None:
    """One file of one of the tenant's completed, unexpired videos."""
    return (
        VideoAsset.objects.filter(
            video__tenant_id=tenant_id,
            video_id=video_id,
            variant=variant,
            video__status=Video.Status.COMPLETED,
        )
        .exclude(video__expires_at__lt=timezone.now())
        .first()
    )
