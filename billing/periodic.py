"""Billing's periodic work on the embedded default, where no Celery beat runs.

With Redis, `rbee worker` runs Celery with its beat (CELERY_BEAT_SCHEDULE in settings):
usage to Stripe every minute, past-due suspensions hourly, invoice drafts daily. On the
embedded default Celery is eager, so the queen runs the same tasks on a thread of its own
at the same intervals.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from django.db import close_old_connections

from billing.schedule import SCHEDULE

logger = logging.getLogger("billing.periodic")


def _run(stop: threading.Event) -> None:
    from billing.invoice_tasks import build_monthly_invoices
    from billing.tasks import audit_usage, report_usage, suspend_past_due

    tasks = {
        "billing.report_usage": report_usage,
        "billing.audit_usage": audit_usage,
        "billing.suspend_past_due": suspend_past_due,
        "billing.build_monthly_invoices": build_monthly_invoices,
    }
    due = {name: time.monotonic() + min(every, 30.0) for name, every in SCHEDULE}
    while not stop.wait(1.0):
        now = time.monotonic()
        for name, every in SCHEDULE:
            if now < due[name]:
                continue
            due[name] = now + every
            try:
                tasks[name].apply()
            except Exception:
                logger.exception("periodic task %s failed", name)
            finally:
                close_old_connections()


def start_in_process() -> threading.Event:
    """Start the thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=_run, args=(stop,), name="billing-periodic", daemon=True).start()
    return stop


def settle_stale_usage(loop: asyncio.AbstractEventLoop | None = None) -> int:
    """One pass of the usage settler: provisional rows of dead queens (or whose heartbeat
    is older than RBEE_USAGE_LEASE_SECONDS) become `interrupted`, and their limiter
    reservations are settled with what they had used. The number settled."""
    from django.conf import settings

    from billing import limits as lim
    from billing.services import usage_settle_stale

    settled = usage_settle_stale(lease_s=float(settings.RBEE_USAGE_LEASE_SECONDS))
    for row in settled:
        logger.warning(
            "request %s of tenant %s was interrupted (its queen is gone): recorded %d+%d tokens",
            row.request_id,
            row.tenant_id,
            row.usage.prompt_tokens,
            row.usage.completion_tokens,
        )
    tickets = [row for row in settled if row.ticket]
    if tickets:

        async def settle_all() -> None:
            limiter = lim.get_limiter()
            for row in tickets:
                actual = lim.Cost(
                    requests=1,
                    tokens=row.usage.tokens,
                    images=row.usage.images,
                    audio_seconds=row.usage.audio_seconds,
                    characters=row.usage.characters,
                )
                # Interim: should the request turn out to be alive, its final settle
                # replaces these heartbeat counts (billing.services.usage_record).
                await limiter.settle(str(row.tenant_id), row.ticket, actual, interim=True)

        if loop is None:
            asyncio.run(settle_all())
        else:
            loop.run_until_complete(settle_all())
    return len(settled)


def _settle_forever(stop: threading.Event, every: float) -> None:
    loop = asyncio.new_event_loop()  # the limiter's Redis client lives on it
    try:
        while True:
            try:
                settle_stale_usage(loop)
            except Exception as exc:
                logger.warning("settling interrupted usage failed (%s); trying again", exc)
            finally:
                close_old_connections()
            if stop.wait(every):
                return
    finally:
        loop.close()


def start_usage_settler() -> threading.Event:
    """Settle interrupted usage now (a queen that restarts settles what its predecessor
    left at once) and every RBEE_USAGE_SETTLE_SECONDS, on a thread of this queen. Every
    queen runs one: a row is settled once whoever gets to it first."""
    from django.conf import settings

    stop = threading.Event()
    every = max(0.2, float(settings.RBEE_USAGE_SETTLE_SECONDS))
    threading.Thread(
        target=_settle_forever, args=(stop, every), name="usage-settler", daemon=True
    ).start()
    return stop
