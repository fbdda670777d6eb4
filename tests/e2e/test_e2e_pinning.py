"""`rbee model add --pin`: the model runs where it was put, and comes back there after a
hive restart (the seed: "SDXL always runs on RTX 4090, even after restarts")."""

from __future__ import annotations

import httpx
import pytest

from testkit.live import Deployment, Hive, Queen
from testkit.machines import machine_path

pytestmark = pytest.mark.e2e


def served(queen: Queen, key: str, model: str) -> str:
    r = httpx.post(
        f"{queen.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-rbee-worker"]


def test_a_pinned_model_comes_back_where_it_was_after_a_hive_restart(
    deployment: Deployment,
) -> None:
    queen = Queen(deployment)
    hive = Hive(
        deployment,
        queen,
        "gaming-pc",
        ["filler=echo:"],
        extra_args=["--inventory", machine_path("gaming-pc-rtx4090")],
    )
    deployment.rbee("tenant", "create", "acme")
    # An operator's key: the answers name the hive and device that served them.
    key = deployment.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()

    out = deployment.rbee(
        "model", "add", "sdxl=echo:", "--hive", "gaming-pc", "--device", "cuda:0", "--pin"
    )
    assert out.stdout.strip() == "sdxl -> gaming-pc:cuda:0 (pinned)"
    queen.wait_for_model("gaming-pc", "sdxl", timeout=30)  # within a heartbeat
    assert served(queen, key, "sdxl") == "gaming-pc/cuda:0"

    # The hive restarts with the arguments it had, which do not mention sdxl.
    hive.stop()
    queen.wait_for_model("gaming-pc", "sdxl", present=False)
    hive.start()
    queen.wait_for_model("gaming-pc", "sdxl", timeout=30)
    assert served(queen, key, "sdxl") == "gaming-pc/cuda:0"
    listing = deployment.rbee("model", "list").stdout
    assert "assigned pinned" in listing

    # Removing the assignment stops it on the hive; the hive's own models stay.
    deployment.rbee("model", "rm", "sdxl", "--hive", "gaming-pc")
    queen.wait_for_model("gaming-pc", "sdxl", present=False, timeout=30)
    assert served(queen, key, "filler") == "gaming-pc/cpu"


def test_model_add_checks_what_it_is_given(deployment: Deployment) -> None:
    out = deployment.rbee("model", "add", "x=echo:", "--hive", "nowhere", check=False)
    assert out.returncode == 1 and "no hive named 'nowhere'" in out.stderr
    deployment.rbee("hive", "token", "--name", "box")
    out = deployment.rbee("model", "add", "broken=", "--hive", "box", check=False)
    assert out.returncode == 1 and "NAME=ENGINE:SOURCE" in out.stderr
    out = deployment.rbee("model", "rm", "ghost", "--hive", "box", check=False)
    assert out.returncode == 1
