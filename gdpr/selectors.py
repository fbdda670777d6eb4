"""Reads of data-subject requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from gdpr.models import AuditEvent, AuditLeaf, SubjectRequest
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


# --- the audit log, as operators search and read it -------------------------------------


def _key_id_of(text: str) -> str | None:
    """The key id sealing a person's fields (an e-mail, `user:...`, `enduser:...` or
    `TENANT:USER`); "" for text that names no data subject, None for a subject without a
    key (never recorded, or erased)."""
    from gdpr.audit import _key_for
    from gdpr.subjects import SubjectError, parse

    try:
        subject = parse(text)
    except SubjectError:
        return ""
    found = _key_for(subject, create=False)
    return found[0] if found is not None else None


def audit_event_search(
    *,
    action: str = "",
    actor: str = "",
    tenant_id: int | None = None,
    subject: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Audit events, newest first, filtered: `action` exactly or, ending in ".", by prefix
    ("tenant."); `actor` a person (matched by their key, so sealed names are found without
    opening every row) or a non-person actor ("system", "cli:ops", "hive:h1") exactly;
    `subject` a person the event is about; `tenant_id`; [since, until)."""
    rows = AuditEvent.objects.all()
    if action:
        rows = (
            rows.filter(action__startswith=action)
            if action.endswith(".")
            else rows.filter(action=action)
        )
    if actor:
        if "@" in actor or actor.startswith(("user:", "enduser:")):
            key = _key_id_of(actor)
            if not key:
                return rows.none()
            rows = rows.filter(actor_key=key)
        else:
            rows = rows.filter(actor=actor)
    if subject:
        key = _key_id_of(subject)
        if not key:
            return rows.none()
        rows = rows.filter(subject_key=key)
    if tenant_id is not None:
        rows = rows.filter(tenant_id=tenant_id)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows.order_by("-id")


def audit_events_view(rows: QuerySet[AuditEvent] | list[AuditEvent]) -> list[dict[str, Any]]:
    """The events as people read them (gdpr.audit.event_view): persons' fields opened
    with their keys where those still exist, else "[erased]"."""
    from gdpr import crypto
    from gdpr.audit import event_view
    from gdpr.models import EVENT_COLUMNS, AuditKey

    events = [{c: getattr(r, c) for c in EVENT_COLUMNS} for r in rows]
    wanted = {e["actor_key"] for e in events} | {e["subject_key"] for e in events}
    wanted.discard("")
    keys = {
        key_id: crypto.unwrap(bytes(wrapped), key_id)
        for key_id, wrapped in AuditKey.objects.filter(id__in=wanted).values_list("id", "wrapped")
    }
    return [event_view(e, keys) for e in events]


@dataclass(frozen=True)
class AuditSigning:
    """How far the audit log is signed: the tree's size (events sequenced), and when the
    oldest event not inside the latest signed checkpoint happened (None: every event is)."""

    tree_size: int
    oldest_unsigned_at: datetime | None


def audit_signing(*, signed_size: int) -> AuditSigning:
    """The log against a checkpoint of `signed_size` leaves (0: none yet), for /metrics:
    the first leaf past it and the first event not sequenced yet, by index (3 queries)."""
    top = AuditLeaf.objects.aggregate(index=Max("index"), event=Max("event_id"))
    size = 0 if top["index"] is None else int(top["index"]) + 1
    candidates: list[datetime] = []
    if size > signed_size:
        first = AuditLeaf.objects.filter(index=signed_size).values_list("event_id", flat=True)
        when = AuditEvent.objects.filter(id__in=first).values_list("created_at", flat=True)
        candidates += list(when[:1])
    unsequenced = (
        AuditEvent.objects.filter(id__gt=top["event"] or 0)
        .order_by("id")
        .values_list("created_at", flat=True)[:1]
    )
    candidates += list(unsequenced)
    return AuditSigning(tree_size=size, oldest_unsigned_at=min(candidates, default=None))
