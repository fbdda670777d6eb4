"""gdpr's periodic work and how often it runs: the one list that both Celery beat
(``CELERY_BEAT_SCHEDULE`` in the settings) and the embedded default's thread
(``gdpr/periodic.py``) read. No Django imports: the settings module imports it."""

from __future__ import annotations

import os

# How often a signed checkpoint is written (when the log grew): at least every 60 s.
CHECKPOINT_SECONDS = float(os.environ.get("RBEE_AUDIT_CHECKPOINT_SECONDS", "60"))

# How often the retention purge runs (gdpr/retention.py): daily by default.
RETENTION_SECONDS = float(os.environ.get("RBEE_RETENTION_PURGE_SECONDS", str(24 * 3600)))

# (task name, every how many seconds)
SCHEDULE: tuple[tuple[str, float], ...] = (
    # Sequence new events into the tree; checkpoint when the latest is old enough.
    ("gdpr.audit_tick", max(1.0, min(10.0, CHECKPOINT_SECONDS / 6))),
    # Purge what is past its retention period (legal holds kept); each run is audited.
    ("gdpr.retention_purge", max(1.0, RETENTION_SECONDS)),
)


def beat_schedule() -> dict[str, dict[str, object]]:
    return {
        name.replace(".", "-").replace("_", "-"): {"task": name, "schedule": every}
        for name, every in SCHEDULE
    }
