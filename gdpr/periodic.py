"""gdpr's periodic work on the embedded default, where no Celery beat runs: the same
tasks as gdpr/schedule.py, on a thread of the queen (billing/periodic.py does the same
for billing)."""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from gdpr.schedule import SCHEDULE

logger = logging.getLogger("gdpr.periodic")


def _run(stop: threading.Event) -> None:
    from gdpr.tasks import audit_tick, retention_purge

    tasks = {"gdpr.audit_tick": audit_tick, "gdpr.retention_purge": retention_purge}
    due = {name: time.monotonic() + min(every, 5.0) for name, every in SCHEDULE}
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
    threading.Thread(target=_run, args=(stop,), name="gdpr-periodic", daemon=True).start()
    return stop
