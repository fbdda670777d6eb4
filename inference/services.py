"""Writes for the inference app: scheduler script versions."""

from __future__ import annotations

from django.db import transaction

from inference.models import SchedulerScript
from inference.scheduler import Policy, digest


def scheduler_script_store(*, source: str, origin: str = "") -> SchedulerScript:
    """Compile `source` and store it as the newest version (ScriptError if it is broken;
    then nothing is stored and the running script stays)."""
    Policy(source)  # raises ScriptError with line:col
    with transaction.atomic():
        return SchedulerScript.objects.create(
            source=source, sha256=digest(source), origin=origin[:500]
        )
