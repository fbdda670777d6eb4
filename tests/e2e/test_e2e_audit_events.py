"""The audit log on a live deployment: real `rbee` commands, a real queen, a real hive
and sign-ins over HTTP leave one event each, with the CLI's actor ("cli:<OS user>"),
the signed-in person sealed (their e-mail opens only with the subject's key), and no
key, token, password or e-mail in any stored row; `rbee audit verify` then passes."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testkit.live import ROOT, Deployment, Hive, Queen

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-pw-Vx93-secret"
EMAIL = "ops@rbee.example"


@pytest.fixture(scope="module")
def dep() -> Iterator[Deployment]:
    d = Deployment()
    try:
        yield d
    finally:
        d.close()


def _events(dep: Deployment) -> list[tuple[Any, ...]]:
    return dep.sql(
        "SELECT action, actor, tenant_id, actor_key, subject_key FROM gdpr_audit_event ORDER BY id"
    )


def _wait_for(dep: Deployment, action: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(row[0] == action for row in _events(dep)):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {action} event in {timeout}s: {_events(dep)}")


def _opened_for(dep: Deployment, subject: str) -> list[dict[str, Any]]:
    """The subject's events as an export opens them (in the deployment's environment:
    its database and its master key in RBEE_HOME)."""
    code = (
        "import json, django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'rbee.settings');"
        "django.setup(); from gdpr import audit;"
        f"print(json.dumps(audit.events_for_subject({subject!r}), default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=dep.env, cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    found: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def test_cli_commands_logins_and_a_hive_are_in_the_audit_log(dep: Deployment) -> None:
    queen = Queen(dep)
    cli = f"cli:{getpass.getuser()}"
    dep.rbee("tenant", "create", "acme")
    key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
    dep.rbee("key", "revoke", key, "--tenant", "acme")
    dep.rbee("plan", "set", "pro", "requests_per_day=10")
    dep.rbee("tenant", "plan", "acme", "pro")
    dep.rbee(
        "operator", "create", "ops", "--perm", "tenants", "--email", EMAIL, "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip
    hive = Hive(dep, queen, "h1", [], region="eu", wait=False)
    _wait_for(dep, "hive.connect")

    with httpx.Client(timeout=30) as c:
        assert c.get(f"{queen.url}/api/tenants", auth=("ops", PASSWORD)).status_code == 200
        bad = c.get(f"{queen.url}/api/tenants", auth=("ops", "not-the-password"))
        assert bad.status_code in (401, 403)
    hive.stop()
    _wait_for(dep, "hive.disconnect")

    rows = _events(dep)
    acme_id = dep.sql("SELECT id FROM tenants_tenant WHERE name = 'acme'")[0][0]
    ours = [(a, actor, t) for a, actor, t, _, _ in rows if a != "inference"]
    assert ours == [
        ("tenant.create", cli, acme_id),
        ("key.create", cli, acme_id),
        ("key.revoke", cli, acme_id),
        ("plan.set", cli, None),
        ("tenant.plan", cli, acme_id),
        ("operator.create", cli, None),
        ("hive.token", cli, None),
        ("hive.connect", "hive:h1", None),
        # The Basic call that succeeded is no sign-in event; the failure is (its actor is
        # a person: sealed, not in this column).
        ("login.failure", "", None),
        ("hive.disconnect", "hive:h1", None),
    ]
    opened = {e["action"]: e for e in _opened_for(dep, EMAIL)}
    assert set(opened) == {"operator.create", "login.failure"}
    assert opened["login.failure"]["actor"] == f"user:{EMAIL}"
    assert opened["login.failure"]["personal"]["address"] == "127.0.0.1"
    assert opened["operator.create"]["personal"] == {"username": "ops"}

    raw = json.dumps(dep.sql("SELECT * FROM gdpr_audit_event"), default=repr).lower()
    token = hive.token
    for secret in (key, token, PASSWORD, "not-the-password", EMAIL, "127.0.0.1"):
        assert secret.lower() not in raw, secret

    dep.rbee("audit", "checkpoint")
    verified = dep.rbee("audit", "verify")
    assert verified.stdout.startswith("ok: "), verified.stdout
