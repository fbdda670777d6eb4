"""Writes for the inference app: scheduler script versions, the charts' request metrics,
the Responses API's stored responses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from gdpr import audit, subjects
from gdpr.actions import AuditAction
from gdpr.subjects import Subject
from inference.models import RequestStat, SchedulerScript, StoredResponse
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
