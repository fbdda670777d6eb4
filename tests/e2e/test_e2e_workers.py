"""Workers never fight over memory; they unload when idle, reload on demand, and obey the CLI.

The hive presents a recorded GPU (`--inventory`) with little memory, so placements
must be decided by the memory estimates: the engines themselves run on this CPU.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from testkit.live import Deployment, Hive, Queen, bundled_gguf
from tests.conftest import CHAT_MODEL, Stack

pytestmark = pytest.mark.e2e

MiB = 2**20


def small_gpu(tmp: Path) -> str:
    """One 1 GiB GPU with 700 MiB free: room for one SmolLM2 (about 375 MiB with its
    KV cache, plus 256 MiB headroom), not for two."""
    path = tmp / "small-gpu.json"
    path.write_text(
        json.dumps(
            {
                "description": "a small GPU, for placement tests",
                "gpus": [
                    {
                        "name": "NVIDIA GeForce RTX 3050",
                        "memory_total": 1024 * MiB,
                        "memory_used": 324 * MiB,
                        "memory_free": 700 * MiB,
                        "utilization": 0,
                    }
                ],
            }
        )
    )
    return str(path)


def worker_states(stack: Stack, hive: str) -> dict[str, dict[str, str]]:
    body = stack.queen.wait_healthy()
    for h in body["hives"]:
        if h["name"] == hive:
            return {w["model"]: w for w in h["workers"]}
    return {}


def wait_state(stack: Stack, hive: str, model: str, state: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = worker_states(stack, hive).get(model, {})
        if seen.get("state") == state:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{model} on {hive} never became {state}: {seen}")


def chat(stack: Stack, model: str) -> str:
    reply = stack.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    return reply.choices[0].message.content or ""


@pytest.fixture
def gpu_stack(tmp_path: Path) -> Iterator[Stack]:
    dep = Deployment()
    try:
        queen = Queen(dep)
        hive = Hive(
            dep,
            queen,
            "hive-s",
            [f"{CHAT_MODEL}@cuda:0"],
            extra_args=["--inventory", small_gpu(tmp_path), "--idle-unload", "0"],
        )
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()
        yield Stack(dep=dep, queen=queen, hive=hive, api_key=key)
    finally:
        dep.close()


def test_placements_are_checked_against_free_memory(gpu_stack: Stack) -> None:
    s = gpu_stack
    gguf = bundled_gguf()
    # A second model does not fit beside the first: the idle, unpinned one is unloaded.
    out = s.dep.rbee(
        "model",
        "add",
        f"other=llama.cpp:{gguf}",
        "--hive",
        "hive-s",
        "--device",
        "0",
        "--wait",
        "90",
    )
    assert "other -> hive-s:cuda:0" in out.stdout
    assert wait_state(s, "hive-s", CHAT_MODEL, "unloaded")
    assert chat(s, "other")
    # A request for the unloaded model reloads it, making room the same way.
    assert chat(s, CHAT_MODEL)
    assert worker_states(s, "hive-s")[CHAT_MODEL]["state"] == "ready"
    assert wait_state(s, "hive-s", "other", "unloaded")

    # A pinned model is never unloaded to make room: what does not fit is refused,
    # and the refusal says what uses the memory.
    s.dep.rbee(
        "model",
        "add",
        f"keeper=llama.cpp:{gguf}",
        "--hive",
        "hive-s",
        "--device",
        "cuda:0",
        "--pin",
        "--wait",
        "90",
    )
    assert wait_state(s, "hive-s", CHAT_MODEL, "unloaded")
    with pytest.raises(openai.APIStatusError) as info:
        chat(s, CHAT_MODEL)
    assert info.value.status_code == 503
    message = info.value.response.json()["error"]["message"]
    assert re.search(r"cannot place smollm2-135m-instruct on cuda:0", message), message
    assert "keeper" in message and "pinned" in message, message

    refused = s.dep.rbee(
        "model",
        "add",
        f"fourth=llama.cpp:{gguf}",
        "--hive",
        "hive-s",
        "--device",
        "cuda:0",
        "--wait",
        "60",
        check=False,
    )
    assert refused.returncode == 1
    assert "keeper" in refused.stderr and "pinned" in refused.stderr, refused.stderr
    assert worker_states(s, "hive-s")["fourth"]["state"] == "refused"
    listed = s.dep.rbee("worker", "list").stdout
    assert re.search(r"fourth\s+refused", listed), listed
    # The pinned model serves on through all of this.
    assert chat(s, "keeper")


def test_idle_workers_unload_and_come_back(tmp_path: Path) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        hive = Hive(dep, queen, "hive-i", [CHAT_MODEL], extra_args=["--idle-unload", "2"])
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        s = Stack(dep=dep, queen=queen, hive=hive, api_key=key)
        wait_state(s, "hive-i", CHAT_MODEL, "unloaded", timeout=30)
        # Still listed, still servable: the next request loads it again.
        assert CHAT_MODEL in [m.id for m in s.client().models.list().data]
        assert chat(s, CHAT_MODEL)
        assert worker_states(s, "hive-i")[CHAT_MODEL]["state"] == "ready"
    finally:
        dep.close()


def test_worker_stop_start_restart_from_the_cli(gpu_stack: Stack) -> None:
    s = gpu_stack
    s.dep.rbee("worker", "stop", CHAT_MODEL, "--hive", "hive-s")
    wait_state(s, "hive-s", CHAT_MODEL, "stopped", timeout=30)
    with pytest.raises(openai.APIStatusError) as info:
        chat(s, CHAT_MODEL)
    assert info.value.status_code == 503
    s.dep.rbee("worker", "start", CHAT_MODEL, "--hive", "hive-s")
    wait_state(s, "hive-s", CHAT_MODEL, "ready", timeout=60)
    assert chat(s, CHAT_MODEL)

    pids = _worker_pids(s.hive.proc.pid, CHAT_MODEL)
    s.dep.rbee("worker", "restart", CHAT_MODEL, "--hive", "hive-s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _worker_pids(s.hive.proc.pid, CHAT_MODEL)
        if now and not (now & pids) and worker_states(s, "hive-s")[CHAT_MODEL]["state"] == "ready":
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the worker was not restarted")
    assert chat(s, CHAT_MODEL)
    bad = s.dep.rbee("worker", "restart", "nope", "--hive", "hive-s", check=False)
    assert bad.returncode == 1 and "no worker" in bad.stderr


def _worker_pids(hive_pid: int, model: str) -> set[int]:
    out = set()
    for child in psutil.Process(hive_pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "hives.agent.worker" in cmd and f'"name": "{model}"' in cmd:
            out.add(child.pid)
    return out


def test_a_killed_embedding_worker_restarts_and_serves(tmp_path: Path) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        hive = Hive(dep, queen, "hive-k", ["all-minilm-l6-v2"])
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        s = Stack(dep=dep, queen=queen, hive=hive, api_key=key)
        client = s.client()
        assert client.embeddings.create(model="all-minilm-l6-v2", input="bees").data
        (pid,) = _worker_pids(hive.proc.pid, "all-minilm-l6-v2")
        psutil.Process(pid).send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                res = client.embeddings.create(model="all-minilm-l6-v2", input="bees")
                if res.data:
                    break
            except openai.APIStatusError as exc:
                assert exc.status_code in (502, 503), exc.response.text
            time.sleep(0.5)
        else:
            raise AssertionError("the embedding worker never came back")
        (new,) = _worker_pids(hive.proc.pid, "all-minilm-l6-v2")
        assert new != pid
    finally:
        dep.close()


def test_a_worker_with_slots_streams_two_requests_at_once(tmp_path: Path) -> None:
    import threading

    import httpx

    dep = Deployment()
    try:
        queen = Queen(dep)
        hive = Hive(dep, queen, "hive-2", [f"{CHAT_MODEL}?slots=2&n_ctx=1024"])
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        s = Stack(dep=dep, queen=queen, hive=hive, api_key=key)
        events: list[tuple[str, str]] = []
        barrier = threading.Barrier(2)

        def stream(name: str) -> None:
            barrier.wait()
            with httpx.stream(
                "POST",
                f"{s.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": CHAT_MODEL,
                    "messages": [{"role": "user", "content": "Tell me about bees."}],
                    "max_tokens": 40,
                    "temperature": 0,
                    "stream": True,
                },
                timeout=60,
            ) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: ") and '"content":"' in line:
                        events.append((name, "token"))
            events.append((name, "end"))

        threads = [threading.Thread(target=stream, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first_end = min(events.index(("a", "end")), events.index(("b", "end")))
        before = {name for name, kind in events[:first_end] if kind == "token"}
        assert before == {"a", "b"}, events  # both streamed before either finished
    finally:
        dep.close()
