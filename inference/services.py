"""Writes for the inference app: scheduler script versions."""

from __future__ import annotations

from django.db import transaction

from gdpr import audit
from gdpr.actions import AuditAction
from gdpr.subjects import Subject
from inference.models import SchedulerScript
from inference.scheduler import Policy, digest


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
