"""Periodic billing jobs (Celery; autodiscovered by rbee.celery).

* report_usage: sends the meter event outbox to Stripe (every minute).
* suspend_past_due: suspends tenants past due beyond the grace period (hourly).

On the embedded default (eager Celery) a task runs in the caller's thread, and
report_usage does not retry there: the rows stay in the outbox for the next run.
"""

from __future__ import annotations

from typing import Any

import stripe
from celery import shared_task

from billing.stripe_sync import (
    StripeUnreachable,
    customers_sync,
    meter_events_send,
    past_due_suspend,
)

# Network trouble worth retrying: Stripe unreachable, throttling us, or failing (5xx).
RETRY_ON: tuple[type[Exception], ...] = (
    StripeUnreachable,
    stripe.APIConnectionError,
    stripe.RateLimitError,
    stripe.APIError,
)


@shared_task(
    bind=True,
    name="billing.report_usage",
    autoretry_for=RETRY_ON,
    retry_backoff=5,  # 5 s, 10 s, 20 s, ... (jittered), at most retry_backoff_max
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
    acks_late=True,
    ignore_result=True,
)
def report_usage(self: Any, limit: int = 500) -> dict[str, int]:
    """Send unsent meter events to Stripe; {"sent": n, "failed": m}. When Stripe keeps
    failing the task is retried with exponential backoff (not when eager)."""
    eager = bool(getattr(self.request, "is_eager", False))
    customers_sync()  # tenants made since the last run get their Stripe customer first
    sent, failed = meter_events_send(limit, raise_when_unreachable=not eager)
    return {"sent": sent, "failed": failed}


@shared_task(name="billing.suspend_past_due", acks_late=True, ignore_result=True)
def suspend_past_due() -> dict[str, Any]:
    """Suspend tenants whose payment has been failing for longer than
    RBEE_PAST_DUE_GRACE_DAYS. Their keys stop working at once (key checks read the
    tenant's status on every request)."""
    names = past_due_suspend()
    return {"suspended": len(names), "tenants": names}


@shared_task(name="billing.audit_usage", acks_late=True, ignore_result=True)
def audit_usage() -> dict[str, Any]:
    """Append the audit events of finished requests (billing/audit_feed.py): a batch at a
    time until caught up, idempotent per request id."""
    from billing.audit_feed import BATCH, usage_audit_append

    seen = 0
    while (n := usage_audit_append()) == BATCH:
        seen += n
    return {"rows": seen + n}
