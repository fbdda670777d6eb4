"""gdpr's jobs (Celery; autodiscovered by rbee.celery; in-process on the embedded default):
the audit log's periodic tick, and data-subject request jobs."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from gdpr import services


@shared_task(name="gdpr.audit_tick", acks_late=True, ignore_result=True)
def audit_tick() -> dict[str, Any]:
    """Sequence new audit events into the Merkle tree; sign and write a checkpoint when
    the log grew and the latest checkpoint is about CHECKPOINT_SECONDS old. Idempotent
    (one sequencer and one checkpointer at a time: gdpr.ledger's locks)."""
    from gdpr import ledger
    from gdpr.schedule import CHECKPOINT_SECONDS

    ledger.tick(checkpoint_every=CHECKPOINT_SECONDS)
    return {}


@shared_task(name="gdpr.request_run", acks_late=True, ignore_result=True)
def request_run(request_id: int) -> str:
    """Run one request (idempotent: a done request is left alone, a failed one re-run).
    A failure is recorded on the request (status failed, shown to operators as open and,
    past its deadline, overdue) and not raised into the caller of an eager run."""
    try:
        return services.request_run(request_id=request_id).status
    except Exception:
        return "failed"


def request_enqueue(request_id: int) -> None:
    """Send the job once the request's row is committed."""
    from django.db import transaction

    transaction.on_commit(lambda: request_run.delay(request_id))


@shared_task(name="gdpr.retention_purge", acks_late=True, ignore_result=True)
def retention_purge() -> dict[str, Any]:
    """Purge every record class past its retention period, legal holds kept; the run is
    an audit event (gdpr/retention.py). Idempotent: a redelivered run finds less to do."""
    from gdpr import retention

    run = retention.run(actor="retention")
    return {"deleted": run.deleted, "errors": run.errors}
