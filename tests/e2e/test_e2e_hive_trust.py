"""A hive is not trusted with the catalog: real queen, an honest hive and a rogue one.

The rogue hive runs with a token the operator created without --trust-models, and says
it serves the honest hive's model (with another source), an alias's name and a model
nobody asked for. Nothing is routed to it, the catalog is unchanged, and what it claims
waits as pending until the operator approves it; revoking its token ends its session
within a heartbeat, and disabling a hive takes it out of routing until enabled.
"""

from __future__ import annotations

import time

import httpx
import pytest

from testkit.live import Deployment, Hive, Queen

pytestmark = pytest.mark.e2e


def chat(queen: Queen, key: str, model: str) -> httpx.Response:
    return httpx.post(
        f"{queen.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def pending(dep: Deployment, hive: str) -> set[str]:
    rows = dep.sql(
        "select a.model_name from hives_modelapproval a join hives_hive h on h.id = a.hive_id "
        f"where h.name = '{hive}' and not a.approved"
    )
    return {r[0] for r in rows}


def wait_until(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_rogue_hive_gets_nothing_and_changes_nothing(deployment: Deployment) -> None:
    dep = deployment
    queen = Queen(dep, env={"RBEE_HIVE_HEARTBEAT": "1"})
    # The honest hive: its token made by the operator with --trust-models and a region;
    # it says it is in another region, which changes nothing.
    token = dep.rbee(
        "hive", "token", "--name", "honest", "--trust-models", "--region", "eu"
    ).stdout.strip()
    Hive(dep, queen, "honest", ["shared=echo:"], token=token, extra_args=["--region", "us"])
    dep.rbee("model", "alias", "gpt-4o", "shared")
    catalog_before = dep.sql("select name, capability, engine, source from hives_catalogmodel")
    dep.rbee("tenant", "create", "acme")
    key = dep.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()

    rogue = Hive(
        dep,
        queen,
        "rogue",
        ["shared=echo:/rogue/weights#embedding", "gpt-4o=echo:", "fresh=echo:"],
        trust_models=False,
        wait=False,
        extra_args=["--region", "eu"],
    )
    wait_until(
        "the rogue hive's claims were never recorded",
        lambda: pending(dep, "rogue") == {"shared", "gpt-4o", "fresh"},
    )
    # Its workers are ready on its side; the queen routes every request to the honest hive.
    for model in ["shared", "gpt-4o"] * 6:
        r = chat(queen, key, model)
        assert r.status_code == 200, r.text
        assert r.headers["x-rbee-worker"] == "honest/cpu"
    # The catalog is as the operator left it: no new model, no changed definition.
    assert dep.sql("select name, capability, engine, source from hives_catalogmodel") == (
        catalog_before
    )
    r = chat(queen, key, "fresh")
    assert r.status_code == 404, r.text
    regions = dict(dep.sql("select name, region from hives_hive"))
    assert regions == {"honest": "eu", "rogue": ""}
    listing = dep.rbee("hive", "list").stdout
    assert "pending  fresh" in listing and "rbee hive approve rogue fresh" in listing

    # The operator approves one of its models: from its next report it serves that one.
    dep.rbee("hive", "approve", "rogue", "fresh")
    queen.wait_for_model("rogue", "fresh", timeout=15)
    r = chat(queen, key, "fresh")
    assert r.status_code == 200 and r.headers["x-rbee-worker"] == "rogue/cpu"

    # Revoked: its socket is closed within a heartbeat (1 s here) and, refused, it exits.
    revoked_at = time.monotonic()
    dep.rbee("hive", "revoke", "rogue")
    assert rogue.proc.wait(timeout=10) == 2
    assert time.monotonic() - revoked_at < 1 + 5  # a heartbeat, plus starting the CLI
    assert "revoked" in rogue.log.read_text()
    assert chat(queen, key, "fresh").status_code in (404, 503)

    # Disabled: nothing is routed to the honest hive until it is enabled again.
    dep.rbee("hive", "disable", "honest")
    r = chat(queen, key, "shared")
    assert r.status_code == 503, r.text
    dep.rbee("hive", "enable", "honest")
    queen.wait_for_model("honest", "shared", timeout=60)
    wait_until(
        "the honest hive never came back",
        lambda: chat(queen, key, "shared").status_code == 200,
    )
    assert chat(queen, key, "shared").headers["x-rbee-worker"] == "honest/cpu"
