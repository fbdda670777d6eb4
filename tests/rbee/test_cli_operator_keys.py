"""Keys the CLI makes for the queen's own operator: `rbee key create --operator`, and the
key `rbee up` prints for the machine's owner, are operators' keys (their answers name the
hive that served them); a plain `rbee key create` is a tenant's."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rbee.cli import main
from rbee.cli.up import _ensure_default_key
from tenants.selectors import caller_from_key
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def test_key_create_operator_flag() -> None:
    tenant_create(name="acme")
    plain = CliRunner().invoke(main, ["key", "create", "--tenant", "acme"])
    ops = CliRunner().invoke(main, ["key", "create", "--tenant", "acme", "--operator"])
    assert plain.exit_code == ops.exit_code == 0, (plain.output, ops.output)
    assert not caller_from_key(plain.output.strip()).operator
    assert caller_from_key(ops.output.strip()).operator


def test_the_key_rbee_up_prints_is_the_owners_operator_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    key = _ensure_default_key()
    assert caller_from_key(key).operator
    assert _ensure_default_key() == key  # kept, not made again
