"""One tenant's flood of a one-slot model does not keep another tenant out (real queen,
real hive, a real model on one worker)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from testkit.live import Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e


def test_tenant_b_is_served_while_tenant_a_floods_a_one_slot_model(
    deployment: Deployment,
) -> None:
    queen = Queen(deployment, env={"RBEE_QUEUE_MAX_PER_TENANT": "3", "RBEE_WORKER_SLOTS": "1"})
    Hive(deployment, queen, "one-slot", [CHAT_MODEL])
    keys = {}
    for tenant in ("flooder", "bystander"):
        deployment.rbee("tenant", "create", tenant)
        keys[tenant] = deployment.rbee("key", "create", "--tenant", tenant).stdout.strip()
    started = time.monotonic()

    def ask(tenant: str, i: int) -> tuple[str, int, float, str]:
        r = httpx.post(
            f"{queen.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {keys[tenant]}"},
            json={
                "model": CHAT_MODEL,
                "max_tokens": 24,
                "temperature": 0,
                "messages": [{"role": "user", "content": f"Tell story number {i}."}],
            },
            timeout=120,
        )
        code = r.json()["error"]["code"] if r.status_code != 200 else ""
        return tenant, r.status_code, time.monotonic() - started, code

    with ThreadPoolExecutor(24) as pool:
        flood = [pool.submit(ask, "flooder", i) for i in range(20)]
        time.sleep(1.0)  # the flood has arrived: one runs, three wait, the rest were refused
        b_sent = time.monotonic() - started
        bystander = pool.submit(ask, "bystander", 99)
        answers = [f.result() for f in flood]
        b = bystander.result()

    refused = [a for a in answers if a[1] == 429]
    served = sorted(a[2] for a in answers if a[1] == 200)
    assert all(a[3] == "queue_full" for a in refused), answers
    assert len(refused) >= 14 and len(served) <= 6, answers  # A's excess got 429
    assert b[1] == 200, b
    # B went ahead of A's waiting requests: of those still running or waiting when B was
    # sent (on a slow machine the first may be done before), at most the one running and
    # one more (that may have started just as B arrived) finished before it.
    assert sum(1 for t in served if b_sent < t < b[2]) <= 2, (b_sent, b, served)


def test_the_plan_caps_priority_and_a_header_cannot_raise_it(deployment: Deployment) -> None:
    """A batch-only plan's requests reach the scheduler as batch whatever the client's
    X-Rbee-Priority says; another tenant's header still lowers its own priority."""
    from pathlib import Path

    queen = Queen(deployment, env={"RBEE_SCHEDULER_CHECK_SECONDS": "0.2"})
    Hive(deployment, queen, "local", ["m=echo:"])
    deployment.rbee("plan", "set", "bulk", "--queue-weight", "2", "--max-priority", "batch")
    deployment.rbee("tenant", "create", "bulk-co", "--plan", "bulk")
    deployment.rbee("tenant", "create", "chatty")
    keys = {
        t: deployment.rbee("key", "create", "--tenant", t).stdout.strip()
        for t in ("bulk-co", "chatty")
    }
    script = Path(deployment.home) / "tell.rhai"
    script.write_text(
        "fn should_admit(task, customer) { deny(`${task.tenant}: ${task.priority}`) }"
    )
    deployment.rbee("scheduler", "reload", str(script))
    time.sleep(0.5)

    def seen(tenant: str, priority: str) -> str:
        r = httpx.post(
            f"{queen.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {keys[tenant]}", "X-Rbee-Priority": priority},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert r.status_code == 403, r.text
        return str(r.json()["error"]["message"])

    assert seen("bulk-co", "interactive") == "bulk-co: batch"
    assert seen("bulk-co", "batch") == "bulk-co: batch"
    assert seen("chatty", "interactive") == "chatty: interactive"
    assert seen("chatty", "batch") == "chatty: batch"
