"""Scheduler scripts stored (the management API: scheduler.store) and reloaded
(`rbee scheduler reload FILE`: scheduler.reload) are audit events naming who did it, the
stored version and the script's SHA-256 (not its text); a refused script records
nothing."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from gdpr.actions import AuditAction as A
from inference.models import SchedulerScript
from inference.scheduler import digest
from inference.services import scheduler_script_store
from rbee.cli import main
from testkit.scheduler import seed_scripts
from tests.audit_events import (
    actions,
    audit_home,  # noqa: F401 (the fixture, used by name)
    one,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_home")]

URL = "/api/scheduler/script"


def test_a_script_stored_over_the_api() -> None:
    User.objects.create_superuser("ops", "ops@rbee.example", "pw-for-tests")
    c = Client()
    c.login(username="ops", password="pw-for-tests")
    source = seed_scripts()[0]
    r = c.post(URL, json.dumps({"source": source}), content_type="application/json")
    assert r.status_code == 201, r.content
    before = actions()
    broken = c.post(URL, json.dumps({"source": "fn route_task("}), content_type="application/json")
    assert broken.status_code == 400
    assert actions() == before
    ev = one(A.SCHEDULER_STORE)
    assert ev["actor"] == "user:ops@rbee.example"
    assert ev["data"] == {"version": r.json()["version"], "sha256": digest(source), "origin": "api"}


def test_rbee_scheduler_reload_is_recorded_as_the_cli_user(tmp_path: Path) -> None:
    script = tmp_path / "scheduler.rhai"
    script.write_text(seed_scripts()[0])
    result = CliRunner().invoke(main, ["scheduler", "reload", str(script)])
    assert result.exit_code == 0, result.output
    ev = one(A.SCHEDULER_RELOAD)
    assert ev["actor"] == f"cli:{getpass.getuser()}"
    assert ev["data"]["version"] == SchedulerScript.objects.get().pk
    assert ev["data"]["origin"] == str(script)
    assert actions().count(A.SCHEDULER_STORE) == 0


def test_a_rolled_back_store_leaves_no_event() -> None:
    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        scheduler_script_store(source=seed_scripts()[0], actor="cli:root")
        raise Undo
    assert actions() == [] and not SchedulerScript.objects.exists()
