"""Writes for the inference app: scheduler script versions, the charts' request metrics,
the Responses API's stored responses, video jobs."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from gdpr import audit, subjects
from gdpr.actions import AuditAction
from gdpr.subjects import Subject
from inference.models import RequestStat, SchedulerScript, StoredResponse, Video, VideoAsset
from inference.scheduler import Policy, digest
from inference.stats import BIGINT_MAX, Sums


def scheduler_script_store(
    *,
    source: str,
    origin: str = "",
    actor: Subject | str = "system",
    reload: bool = False,
) -> SchedulerScript:
    """Compile `source` and store it as the newest version (ScriptError if it is broken;
    then nothing is stored, nothing is recorded, and the running script stays).

    The audit event (scheduler.reload from `rbee scheduler reload`, else scheduler.store)
    names the version and the script's SHA-256, not its text: the stored version holds
    that, and the hash proves which text was in force."""
    Policy(source)  # raises ScriptError with line:col
    with transaction.atomic():
        row = SchedulerScript.objects.create(
            source=source, sha256=digest(source), origin=origin[:500]
        )
        audit.record(
            AuditAction.SCHEDULER_RELOAD if reload else AuditAction.SCHEDULER_STORE,
            actor=actor,
            data={"version": row.pk, "sha256": row.sha256, "origin": row.origin},
        )
        return row


def request_stats_add(*, sums: Mapping[tuple[datetime, str], Sums]) -> None:
    """Add one process's per-minute sums to RequestStat: one INSERT ... ON CONFLICT DO
    UPDATE that increments each row (PostgreSQL and SQLite), so flushes of several queens
    at once add up. Rows in (minute, model) order: concurrent flushes lock rows in the
    same order and cannot deadlock."""
    if not sums:
        return
    table = connection.ops.quote_name(RequestStat._meta.db_table)
    columns = [f.name for f in fields(Sums)]
    q = connection.ops.quote_name
    rows = []
    params: list[Any] = []
    for (minute, model), s in sorted(sums.items()):
        rows.append("(" + ", ".join(["%s"] * (2 + len(columns))) + ")")
        params += [connection.ops.adapt_datetimefield_value(minute), model]
        params += [getattr(s, c) for c in columns]
    counts = {f.name for f in fields(Sums) if f.type in (int, "int")}

    def increment(c: str) -> str:
        """Counts saturate at bigint instead of failing the whole upsert."""
        if c not in counts:
            return f"{q(c)} = {table}.{q(c)} + EXCLUDED.{q(c)}"
        return (
            f"{q(c)} = CASE WHEN {table}.{q(c)} > {BIGINT_MAX} - EXCLUDED.{q(c)} "
            f"THEN {BIGINT_MAX} ELSE {table}.{q(c)} + EXCLUDED.{q(c)} END"
        )

    updates = ", ".join(increment(c) for c in columns)
    # Identifiers from the model's own metadata, values as parameters.
    names = ", ".join(q(c) for c in ["minute", "model", *columns])
    sql = (
        f"INSERT INTO {table} ({names}) VALUES {', '.join(rows)} "  # noqa: S608
        f"ON CONFLICT ({q('minute')}, {q('model')}) DO UPDATE SET {updates}"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def request_stats_prune(*, before: datetime) -> int:
    """Delete the per-minute sums of minutes before `before`; how many rows."""
    deleted, _ = RequestStat.objects.filter(minute__lt=before).delete()
    return deleted


def stored_response_create(
    *,
    tenant_id: int,
    tenant: str,
    response_id: str,
    end_user: str,
    basis: str,
    model: str,
    history: list[Any],
    input_items: list[Any],
    body: dict[str, Any],
    days: int,
) -> StoredResponse:
    """Keep one Responses API response for the tenant (idempotent per id), until the
    tenant's retention days have passed. The caller decided the basis (consent or
    contract: gdpr.exchanges.basis_for). A turn that names no end user but continues a
    stored response (its `history` holds that conversation) is that end user's too, so
    their export and erasure find it."""
    subject = str(subjects.end_user(tenant, end_user)) if end_user else ""
    previous = body.get("previous_response_id")
    if not subject and previous:
        subject = (
            StoredResponse.objects.filter(tenant_id=tenant_id, response_id=previous)
            .values_list("subject", flat=True)
            .first()
            or ""
        )
    row, _ = StoredResponse.objects.get_or_create(
        response_id=response_id,
        defaults={
            "tenant_id": tenant_id,
            "subject": subject,
            "basis": basis,
            "model": model,
            "history": history,
            "input_items": input_items,
            "body": body,
            "expires_at": timezone.now() + timedelta(days=max(1, days)),
        },
    )
    return row


def stored_response_delete(*, tenant_id: int, response_id: str) -> bool:
    """Delete the tenant's stored response; False when it has none of that id."""
    n, _ = StoredResponse.objects.filter(tenant_id=tenant_id, response_id=response_id).delete()
    return n > 0


# --- video jobs (inference/videos.py) -------------------------------------------------

# The files a completed video offers: variant -> (the worker's result key, media type).
VIDEO_VARIANTS: dict[str, tuple[str, str]] = {
    "video": ("video_b64", "video/mp4"),
    "thumbnail": ("thumbnail_b64", "image/webp"),
    "spritesheet": ("spritesheet_b64", "image/jpeg"),
}


def video_file(result: dict[str, Any], variant: str) -> bytes:
    """One file of a worker's video result, decoded (b"" when it has none that decodes)."""
    try:
        return base64.b64decode(str(result.get(VIDEO_VARIANTS[variant][0]) or ""), validate=True)
    except (binascii.Error, ValueError):
        return b""


def video_create(
    *,
    tenant_id: int,
    model: str,
    prompt: str,
    seconds: str,
    size: str,
    end_user: str,
    queen: str,
) -> Video:
    """A new queued video job of the tenant."""
    return Video.objects.create(
        id=f"video_{secrets.token_hex(16)}",
        tenant_id=tenant_id,
        model=model[:200],
        prompt=prompt,
        seconds=seconds,
        size=size[:16],
        end_user=end_user[:256],
        queen=queen[:120],
    )


def video_started(*, video_id: str, request_id: str) -> bool:
    """The job was dispatched; False when the video was deleted meanwhile."""
    return (
        Video.objects.filter(id=video_id, status=Video.Status.QUEUED).update(
            status=Video.Status.IN_PROGRESS, request_id=request_id, updated_at=timezone.now()
        )
        == 1
    )


def video_progress(*, video_id: str, progress: int) -> bool:
    """The running job's percent done (also its queen's sign of life); False when the
    video was deleted meanwhile (the job is then abandoned)."""
    return (
        Video.objects.filter(id=video_id, status=Video.Status.IN_PROGRESS).update(
            progress=max(0, min(99, progress)), updated_at=timezone.now()
        )
        == 1
    )


def video_complete(*, video_id: str, result: dict[str, Any], ttl: int) -> bool:
    """Store the worker's files and mark the job completed, expiring `ttl` seconds from
    now; True when it did. A result without a decodable MP4 fails the job instead, and a
    video deleted or ended meanwhile is left alone (False: nothing is stored)."""
    files: dict[str, bytes] = {}
    for variant in VIDEO_VARIANTS:
        data = video_file(result, variant)
        if data:
            files[variant] = data
    if "video" not in files:
        video_fail(
            video_id=video_id, code="worker_error", message="The worker returned no video.", ttl=ttl
        )
        return False
    size = str(result.get("size") or "")[:16]
    now = timezone.now()
    with transaction.atomic():
        video = Video.objects.select_for_update().filter(id=video_id).first()
        if video is None or video.status in (Video.Status.COMPLETED, Video.Status.FAILED):
            return False
        for variant, data in files.items():
            VideoAsset.objects.create(
                video=video,
                variant=variant,
                content=data,
                content_type=VIDEO_VARIANTS[variant][1],
            )
        video.status = Video.Status.COMPLETED
        video.progress = 100
        video.size = size or video.size
        video.completed_at = now
        video.expires_at = now + timedelta(seconds=ttl)
        video.save()
    return True


def video_fail(*, video_id: str, code: str, message: str, ttl: int) -> bool:
    """Mark a job that has not ended failed, with OpenAI's error (code, message); it
    expires `ttl` seconds from now like a completed one."""
    now = timezone.now()
    return (
        Video.objects.filter(id=video_id)
        .exclude(status__in=(Video.Status.COMPLETED, Video.Status.FAILED))
        .update(
            status=Video.Status.FAILED,
            error_code=code[:64],
            error_message=message,
            completed_at=now,
            expires_at=now + timedelta(seconds=ttl),
            updated_at=now,
        )
        == 1
    )


def video_delete(*, tenant_id: int, video_id: str) -> bool:
    """Delete one of the tenant's videos and its files (a running job is abandoned:
    its queen sees the row gone at its next progress report and cancels the job)."""
    n, _ = Video.objects.filter(tenant_id=tenant_id, id=video_id).delete()
    return n > 0


def video_touch(*, video_id: str) -> bool:
    """The queen running a job that has not ended says it still is (a job may wait in
    its model's queue longer than RBEE_VIDEO_STALE_SECONDS); False once it has ended or
    was deleted."""
    return (
        Video.objects.filter(
            id=video_id, status__in=(Video.Status.QUEUED, Video.Status.IN_PROGRESS)
        ).update(updated_at=timezone.now())
        == 1
    )


def video_fail_stale(
    *,
    now: datetime,
    stale_seconds: int,
    ttl: int,
    tenant_id: int | None = None,
    video_id: str | None = None,
) -> int:
    """Fail the queued or running jobs whose queen is gone: it has not touched them for
    stale_seconds, or it certainly ended (kernel.process.instance_gone). A video job runs
    on the queen that accepted it and cannot go on elsewhere. All of them (the retention
    purge), or only the tenant's (its reads), or only one of its videos."""
    from kernel.process import instance_gone, instance_id

    running = Video.objects.filter(status__in=(Video.Status.QUEUED, Video.Status.IN_PROGRESS))
    if tenant_id is not None:
        running = running.filter(tenant_id=tenant_id)
    if video_id is not None:
        running = running.filter(id=video_id)
    queens = set(running.exclude(queen=instance_id()).values_list("queen", flat=True)[:1000])
    gone = [q for q in queens if q and instance_gone(q)]
    cutoff = now - timedelta(seconds=stale_seconds)
    return running.filter(Q(updated_at__lt=cutoff) | Q(queen__in=gone)).update(
        status=Video.Status.FAILED,
        error_code="server_error",
        error_message="The server stopped while generating the video; create it again.",
        completed_at=now,
        expires_at=now + timedelta(seconds=ttl),
        updated_at=now,
    )
