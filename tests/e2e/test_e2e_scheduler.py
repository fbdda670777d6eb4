"""The seed scripts route real requests across several real hives, and reload live.

Three hive processes present the product documents' machines (a gaming PC with an RTX 4090,
a Mac Studio, an old server with two 3090s) from recorded inventories; the engines under
them are this machine's (the echo engine, which answers at once).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from testkit.live import Deployment, Hive, Queen
from testkit.machines import machine_path
from testkit.scheduler import seed_scripts

pytestmark = pytest.mark.e2e

CONSUMER, BATCH, BUSINESS = seed_scripts()[0], seed_scripts()[1], seed_scripts()[5]


def models(*devices: str) -> list[str]:
    return [f"{m}=echo:@{d}" for d in devices for m in ("llama-3-70b", "llama-3-8b")]


def start_farm(dep: Deployment, queen: Queen) -> dict[str, Hive]:
    farm = {}
    for name, machine, devices, region in (
        ("gaming-pc", "gaming-pc-rtx4090", ["cuda:0"], "us"),
        ("mac-studio", "mac-studio-m2-ultra", ["metal:0"], "us"),
        ("old-server", "old-server-2x3090", ["cuda:0", "cuda:1"], "eu"),
        ("gpu-node-03", "dgx-h100", ["cuda:0"], "us"),
    ):
        farm[name] = Hive(
            dep,
            queen,
            name,
            models(*devices),
            region=region,
            extra_args=["--inventory", machine_path(machine)],
        )
    return farm


def ask(queen: Queen, key: str, model: str, **headers: str) -> httpx.Response:
    r = httpx.post(
        f"{queen.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", **headers},
        json={"model": model, "messages": [{"role": "user", "content": "route me"}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r


def reload(dep: Deployment, source: str, name: str) -> None:
    path = Path(dep.home) / name
    path.write_text(source)
    out = dep.rbee("scheduler", "reload", str(path))
    assert "stored" in out.stdout


def wait_for_route(queen: Queen, key: str, model: str, hive: str, **headers: str) -> None:
    deadline = time.monotonic() + 10
    while not ask(queen, key, model, **headers).headers["x-rbee-worker"].startswith(hive + "/"):
        assert time.monotonic() < deadline, f"{model} never routed to {hive}"
        time.sleep(0.1)


def test_seed_scripts_route_across_hives_and_reload_live(deployment: Deployment) -> None:
    queen = Queen(deployment, env={"RBEE_SCHEDULER_CHECK_SECONDS": "0.2"})
    farm = start_farm(deployment, queen)
    deployment.rbee("tenant", "create", "acme")
    key = deployment.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()

    # No script: the default policy decides.
    assert ask(queen, key, "llama-3-70b").headers["x-rbee-decision"] == "default"
    # Residency: only workers in the asked region are eligible.
    for _ in range(4):
        where = ask(queen, key, "llama-3-70b", **{"X-Rbee-Region": "eu"}).headers["x-rbee-worker"]
        assert where.startswith("old-server/")
    r = httpx.post(
        f"{queen.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", "X-Rbee-Region": "mars"},
        json={"model": "llama-3-70b", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 503 and "region 'mars'" in r.json()["error"]["message"]

    reload(deployment, CONSUMER, "consumer.rhai")
    wait_for_route(queen, key, "llama-3-70b", "mac-studio")
    r = ask(queen, key, "llama-3-70b")
    assert r.headers["x-rbee-decision"] == "script"
    assert r.headers["x-rbee-worker"] == "mac-studio/metal:0"
    small = {ask(queen, key, "llama-3-8b").headers["x-rbee-worker"] for _ in range(6)}
    assert small <= {"old-server/cuda:0", "old-server/cuda:1"}

    # The batch script, reloaded while requests keep flowing: none of them fails.
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                ask(queen, key, "llama-3-8b")
            except AssertionError as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        reload(deployment, BATCH, "batch.rhai")
        wait_for_route(queen, key, "llama-3-8b", "gaming-pc")
        wait_for_route(queen, key, "llama-3-8b", "old-server", **{"X-Rbee-Priority": "batch"})
        # A broken script is refused, and the running one stays.
        broken = Path(deployment.home) / "broken.rhai"
        broken.write_text("fn route_task(task, workers) {\n  workers.filter(|w| \n}\n")
        out = deployment.rbee("scheduler", "reload", str(broken), check=False)
        assert out.returncode == 1
        assert "broken.rhai:" in out.stderr and "the running script stays" in out.stderr
        time.sleep(0.5)
        assert ask(queen, key, "llama-3-8b").headers["x-rbee-worker"].startswith("gaming-pc/")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []

    # A hive that disappears is out of routing at once: the script's filter finds nothing,
    # unit comes back, and the default policy serves from the hives that are left.
    reload(deployment, CONSUMER, "consumer.rhai")
    wait_for_route(queen, key, "llama-3-70b", "mac-studio")
    farm["mac-studio"].kill()
    queen.wait_for_model("mac-studio", "llama-3-70b", present=False)
    r = ask(queen, key, "llama-3-70b")
    assert not r.headers["x-rbee-worker"].startswith("mac-studio")
    assert r.headers["x-rbee-decision"] == "default"

    # The business seed script: enterprise customers get the H100s.
    deployment.rbee("tenant", "create", "bigco", "--tier", "enterprise")
    big = deployment.rbee("key", "create", "--tenant", "bigco", "--operator").stdout.strip()
    reload(deployment, BUSINESS, "business.rhai")
    wait_for_route(queen, big, "llama-3-8b", "gpu-node-03")
    assert ask(queen, big, "llama-3-8b").headers["x-rbee-worker"] == "gpu-node-03/cuda:0"
    # acme is on the free tier, which wants A100s: there are none, so the default decides.
    assert ask(queen, key, "llama-3-8b").headers["x-rbee-decision"] == "default"


def test_scheduler_check_reports_line_and_column(deployment: Deployment) -> None:
    good = Path(deployment.home) / "good.rhai"
    good.write_text(CONSUMER)
    out = deployment.rbee("scheduler", "check", str(good))
    assert "-> mac-studio (script)" in out.stdout
    bad = Path(deployment.home) / "bad.rhai"
    bad.write_text("fn route_task(task, workers) {\n    workers.frist()\n}\n")
    out = deployment.rbee("scheduler", "check", str(bad), check=False)
    assert out.returncode == 1
    assert "bad.rhai:2:" in out.stderr and "did you mean `first`" in out.stderr


def test_should_admit_sees_the_real_queue_depth(deployment: Deployment) -> None:
    """The consumer seed's admission: past 10 waiting requests, new ones hear its message."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import CHAT_MODEL

    queen = Queen(deployment, env={"RBEE_SCHEDULER_CHECK_SECONDS": "0.2"})
    Hive(deployment, queen, "slow", [CHAT_MODEL])
    deployment.rbee("tenant", "create", "acme")
    key = deployment.rbee("key", "create", "--tenant", "acme").stdout.strip()
    reload(deployment, CONSUMER, "consumer.rhai")
    time.sleep(0.5)

    def one(i: int) -> httpx.Response:
        time.sleep(i * 0.02)  # arrive one after another
        return httpx.post(
            f"{queen.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": CHAT_MODEL,
                "max_tokens": 40,
                "temperature": 0,
                "messages": [{"role": "user", "content": f"Story number {i}, please."}],
            },
            timeout=120,
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    codes = [r.status_code for r in answers]
    rejected = [r for r in answers if r.status_code == 429]
    assert rejected, codes
    assert all(r.json()["error"]["message"] == "Queue full, try again later" for r in rejected)
    assert all(r.headers["retry-after"] for r in rejected)
    assert codes.count(200) >= 11, codes  # one running + ten waiting, at least
    assert set(codes) == {200, 429}


def test_requests_for_different_hives_run_at_the_same_time(deployment: Deployment) -> None:
    """ALL AT THE SAME TIME: two requests on two hives take about as long as one."""
    from concurrent.futures import ThreadPoolExecutor

    from testkit.live import bundled_gguf

    queen = Queen(deployment)
    Hive(deployment, queen, "box-a", [f"writer-a=llama.cpp:{bundled_gguf()}"])
    Hive(deployment, queen, "box-b", [f"writer-b=llama.cpp:{bundled_gguf()}"])
    deployment.rbee("tenant", "create", "acme")
    key = deployment.rbee("key", "create", "--tenant", "acme").stdout.strip()

    def run(model: str) -> float:
        started = time.monotonic()
        r = httpx.post(
            f"{queen.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": model,
                "max_tokens": 120,
                "temperature": 0,
                "seed": 1,
                "messages": [{"role": "user", "content": "Tell a long story about bees."}],
            },
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] > 60
        return time.monotonic() - started

    # Two shared cores also run the other tests' processes: one quiet round of three is
    # enough to show the two ran side by side (run one after the other, none would be).
    rounds = []
    for _ in range(3):
        solo = run("writer-a") + run("writer-b")
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(run, ["writer-a", "writer-b"]))
        together = time.monotonic() - started
        rounds.append((round(together, 2), round(solo, 2)))
        if together < 0.8 * solo:
            break
    else:
        raise AssertionError(f"(together, one after the other) in each round: {rounds}")
