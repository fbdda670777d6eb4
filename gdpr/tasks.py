"""gdpr's periodic jobs (Celery; autodiscovered by rbee.celery)."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="gdpr.audit_tick", acks_late=True, ignore_result=True)
def audit_tick() -> dict[str, Any]:
    """Sequence new audit events into the Merkle tree; sign and write a checkpoint when
    the log grew and the latest checkpoint is about CHECKPOINT_SECONDS old. Idempotent
    (one sequencer and one checkpointer at a time: gdpr.ledger's locks)."""
    from gdpr import ledger
    from gdpr.schedule import CHECKPOINT_SECONDS

    ledger.tick(checkpoint_every=CHECKPOINT_SECONDS)
    return {}


@shared_task(name="gdpr.retention_purge", acks_late=True, ignore_result=True)
def retention_purge() -> dict[str, Any]:
    """Purge every record class past its retention period, legal holds kept; the run is
    an audit event (gdpr/retention.py). Idempotent: a redelivered run finds less to do."""
    from gdpr import retention

    run = retention.run(actor="retention")
    return {"deleted": run.deleted, "errors": run.errors}
