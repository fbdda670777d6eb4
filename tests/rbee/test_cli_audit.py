"""Every `rbee` command that changes something security- or money-relevant records its
audit event as "cli:<OS user>" (run in-process here; tests/e2e/test_e2e_audit_events.py
runs the real console script against a live queen)."""

from __future__ import annotations

import getpass

import pytest
from click.testing import CliRunner

from gdpr.actions import AuditAction as A
from rbee.cli import main
from tests.audit_events import (
    actions,
    audit_home,  # noqa: F401 (the fixture, used by name)
    events,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("audit_home")]


def rbee(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(main, list(args), input=input)
    assert result.exit_code == 0, (args, result.output)
    return result.output


def test_every_changing_command_records_the_cli_user() -> None:
    rbee("plan", "defaults")
    rbee("tenant", "create", "acme", "--plan", "free")
    key = rbee("key", "create", "--tenant", "acme").strip().splitlines()[0]
    rbee("key", "rotate", key, "--tenant", "acme", "--grace", "1h")
    rbee("tenant", "plan", "acme", "pro")
    rbee("tenant", "limit", "acme", "max_concurrent=2")
    rbee("tenant", "suspend", "acme")
    rbee("tenant", "resume", "acme")
    rbee("plan", "set", "team", "requests_per_day=5")
    rbee("operator", "create", "carol", "--perm", "fleet", "--password-stdin", input="pw-1\n")
    rbee("operator", "grant", "carol", "--perm", "audit")
    rbee("operator", "revoke", "carol", "--perm", "fleet")
    rbee("hive", "token", "--name", "gpu-1")
    rbee("hive", "set", "gpu-1", "--region", "eu", "--trust-models")
    rbee("hive", "disable", "gpu-1")
    rbee("hive", "enable", "gpu-1")
    rbee("hive", "approve", "gpu-1", "some-model")
    rbee("model", "add", "tiny-sd", "--hive", "gpu-1", "--wait", "0")
    rbee("model", "rm", "tiny-sd", "--hive", "gpu-1")
    rbee("hive", "revoke", "gpu-1")
    rbee("key", "revoke", key, "--tenant", "acme")

    assert actions() == [
        A.PLAN_SET, A.PLAN_SET, A.PLAN_SET,  # free, pro, enterprise
        A.TENANT_CREATE, A.KEY_CREATE, A.KEY_ROTATE, A.TENANT_PLAN, A.TENANT_OVERRIDES,
        A.TENANT_SUSPEND, A.TENANT_REACTIVATE, A.PLAN_SET,
        A.OPERATOR_CREATE, A.OPERATOR_GRANT, A.OPERATOR_REVOKE,
        A.HIVE_TOKEN, A.HIVE_REGION, A.HIVE_TRUST, A.HIVE_DISABLE, A.HIVE_ENABLE,
        A.MODEL_APPROVE, A.MODEL_ADD, A.MODEL_REMOVE, A.HIVE_REVOKE, A.KEY_REVOKE,
    ]  # fmt: skip
    assert {e["actor"] for e in events()} == {f"cli:{getpass.getuser()}"}
