"""`rbee hive token|set|approve|revoke|disable|enable|list`: the operator's record of a
hive, on the real database."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from hives.models import Hive, ModelApproval
from rbee.cli import main

pytestmark = pytest.mark.django_db


def rbee(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_operator_keeps_a_hives_record() -> None:
    out = rbee("hive", "token", "--name", "box", "--region", "eu", "--trust-models")
    assert out.exit_code == 0 and out.output.startswith("rbee-hive-")
    hive = Hive.objects.get(name="box")
    assert (hive.region, hive.trust_models) == ("eu", True)
    # A new token leaves what it was not told about alone.
    rbee("hive", "token", "--name", "box")
    hive.refresh_from_db()
    assert (hive.region, hive.trust_models) == ("eu", True)

    out = rbee("hive", "set", "box", "--region", "us", "--no-trust-models")
    assert out.exit_code == 0, out.output
    hive.refresh_from_db()
    assert (hive.region, hive.trust_models) == ("us", False)
    bad = rbee("hive", "set", "box", "--region", "not a region!")
    assert bad.exit_code == 1 and "invalid region" in bad.output
    assert rbee("hive", "set", "ghost", "--region", "eu").exit_code == 1

    ModelApproval.objects.create(hive=hive, model_name="claimed", reason="not assigned")
    listing = rbee("hive", "list").output
    assert "pending  claimed" in listing and "rbee hive approve box claimed" in listing
    assert rbee("hive", "approve", "box", "claimed").exit_code == 0
    assert ModelApproval.objects.get(model_name="claimed").approved
    assert "pending" not in rbee("hive", "list").output
    assert rbee("hive", "approve", "box", "claimed", "--withdraw").exit_code == 0
    assert not ModelApproval.objects.get(model_name="claimed").approved

    assert rbee("hive", "disable", "box").exit_code == 0
    assert Hive.objects.get(name="box").disabled
    assert "disabled" in rbee("hive", "list").output
    assert rbee("hive", "enable", "box").exit_code == 0
    assert not Hive.objects.get(name="box").disabled
    assert rbee("hive", "revoke", "box").exit_code == 0
    assert Hive.objects.get(name="box").token_revoked
    assert "revoked" in rbee("hive", "list").output
    # A new token lifts the revocation.
    rbee("hive", "token", "--name", "box")
    assert not Hive.objects.get(name="box").token_revoked
