"""Reads of data-subject requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from gdpr.models import SubjectRequest
from gdpr.subjects import Subject

OPEN = (SubjectRequest.Status.RECEIVED, SubjectRequest.Status.RUNNING, SubjectRequest.Status.FAILED)


def _overdue_q(now: datetime) -> Q:
    return Q(status__in=OPEN) & (
        Q(extended_until__isnull=True, due_at__lt=now) | Q(extended_until__lt=now)
    )


def requests_of(*, subject: Subject) -> QuerySet[SubjectRequest]:
    from gdpr.services import subject_hash

    return SubjectRequest.objects.filter(subject_hash=subject_hash(subject)).order_by("pk")


def request_list(*, overdue_only: bool = False) -> QuerySet[SubjectRequest]:
    rows = SubjectRequest.objects.all().order_by("-received_at", "-pk")
    if overdue_only:
        rows = rows.filter(_overdue_q(timezone.now()))
    return rows


def request_get(*, request_id: int) -> SubjectRequest | None:
    return SubjectRequest.objects.filter(pk=request_id).first()


def is_overdue(req: SubjectRequest, now: datetime | None = None) -> bool:
    return req.status in OPEN and req.deadline < (now or timezone.now())


def overdue_counts() -> dict[str, int]:
    """Open requests past their deadline, by kind (for /metrics: bounded labels)."""
    counts = {kind: 0 for kind in SubjectRequest.Kind.values}
    rows = SubjectRequest.objects.filter(_overdue_q(timezone.now())).values_list("kind", flat=True)
    for kind in rows:
        counts[kind] += 1
    return counts


def request_data(req: SubjectRequest, *, with_subject: bool = False) -> dict[str, Any]:
    now = timezone.now()
    out: dict[str, Any] = {
        "id": req.pk,
        "kind": req.kind,
        "status": req.status,
        "requested_by": req.requested_by,
        "received_at": req.received_at.isoformat(),
        "due_at": req.due_at.isoformat(),
        "extended_until": req.extended_until.isoformat() if req.extended_until else None,
        "extension_reason": req.extension_reason or None,
        "extension_notified_at": (
            req.extension_notified_at.isoformat() if req.extension_notified_at else None
        ),
        "deadline": req.deadline.isoformat(),
        "overdue": is_overdue(req, now),
        "completed_at": req.completed_at.isoformat() if req.completed_at else None,
        "error": req.error or None,
    }
    result = req.result if isinstance(req.result, dict) else {}
    if req.kind == SubjectRequest.Kind.ERASE:
        # "erased", "held" (a legal hold: nothing erased, the receipt says why) or
        # "incomplete" (a store failed; run again).
        out["outcome"] = result.get("outcome")
    else:
        out["archive_deleted"] = result.get("archive_deleted")  # "expired", "erased"
    if with_subject:
        out["subject"] = req.subject_label
    return out
