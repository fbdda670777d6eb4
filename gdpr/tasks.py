"""Data-subject request jobs (Celery with Redis; in-process on the embedded default)."""

from __future__ import annotations

from celery import shared_task

from gdpr import services


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
