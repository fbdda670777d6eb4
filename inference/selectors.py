"""Reads for the inference app: scheduler script versions, the charts' request metrics,
the Responses API's stored responses (always through their tenant)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from inference.models import RequestStat, SchedulerScript, StoredResponse
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
