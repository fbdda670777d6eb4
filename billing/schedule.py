"""Billing's periodic tasks and how often each runs: the one list that both Celery beat
(``CELERY_BEAT_SCHEDULE`` in the settings) and the embedded default's in-process thread
(``billing/periodic.py``) read. No Django imports: the settings module imports it."""

from __future__ import annotations

# (task name, every how many seconds)
SCHEDULE: tuple[tuple[str, float], ...] = (
    ("billing.report_usage", 60.0),
    # Inference audit events from finished usage rows (billing/audit_feed.py).
    ("billing.audit_usage", 5.0),
    ("billing.suspend_past_due", 3600.0),
    ("billing.build_monthly_invoices", 24 * 3600.0),
)


def beat_schedule() -> dict[str, dict[str, object]]:
    """SCHEDULE as Celery beat's setting."""
    return {
        name.replace(".", "-").replace("_", "-"): {"task": name, "schedule": every}
        for name, every in SCHEDULE
    }
