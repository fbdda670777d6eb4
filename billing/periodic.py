"""Billing's periodic work on the embedded default, where no Celery beat runs.

With Redis, `rbee worker` runs Celery with its beat (CELERY_BEAT_SCHEDULE in settings):
usage to Stripe every minute, past-due suspensions hourly, invoice drafts daily. On the
embedded default Celery is eager, so the queen runs the same tasks on a thread of its own
at the same intervals.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from billing.schedule import SCHEDULE

logger = logging.getLogger("billing.periodic")


def _run(stop: threading.Event) -> None:
    from billing.invoice_tasks import build_monthly_invoices
    from billing.tasks import report_usage, suspend_past_due

    tasks = {
        "billing.report_usage": report_usage,
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
