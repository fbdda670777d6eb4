"""Reads for the inference app: scheduler script versions, the charts' request metrics."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from inference.models import RequestStat, SchedulerScript


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
