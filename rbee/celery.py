"""The Celery app. On the embedded default, tasks run in-process (eager)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")

app = Celery("rbee")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
