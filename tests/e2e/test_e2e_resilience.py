"""Hives and workers that die, queens that restart, and queens side by side."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import openai
import psutil
import pytest

from testkit.live import ROOT, Deployment, Hive, Queen, bundled_gguf, free_port, stop_process
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e

MSG = [{"role": "user", "content": "Tell me about bees."}]


def client(queen: Queen, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)


def worker_pids(hive: Hive) -> list[int]:
    return [
        p.pid
        for p in psutil.Process(hive.proc.pid).children(recursive=True)
        if "hives.agent.worker" in " ".join(p.cmdline())
    ]


def test_hive_reconnects_after_the_queen_restarts(deployment: Deployment) -> None:
    queen = Queen(deployment)
    hive = Hive(deployment, queen, "steady", ["echo-model=echo:"])
    deployment.rbee("tenant", "create", "t1")
    key = deployment.rbee("key", "create", "--tenant", "t1").stdout.strip()
    assert client(queen, key).chat.completions.create(model="echo-model", messages=MSG)
    queen.stop()
    queen.start()  # same port, as after a restart of the service
    queen.wait_for_model("steady", "echo-model", timeout=60)
    resp = client(queen, key).chat.completions.create(model="echo-model", messages=MSG)
    assert resp.choices[0].message.content == "Tell me about bees."
    assert hive.proc.poll() is None
    assert "unreachable" in hive.log.read_text() or "retrying" in hive.log.read_text()


def test_a_killed_worker_fails_its_job_clearly_and_is_restarted(deployment: Deployment) -> None:
    queen = Queen(deployment)
    hive = Hive(deployment, queen, "crashy", [f"crashy-llm=llama.cpp:{bundled_gguf()}"])
    deployment.rbee("tenant", "create", "t1")
    # An operator's key: the worker's own words reach the operator, not a tenant.
    key = deployment.rbee("key", "create", "--tenant", "t1", "--operator").stdout.strip()
    (pid,) = worker_pids(hive)
    stream = client(queen, key).chat.completions.create(
        model="crashy-llm", messages=MSG, max_tokens=2000, temperature=1.0, stream=True
    )
    with pytest.raises(openai.APIError) as exc:
        for i, _chunk in enumerate(stream):
            if i == 3:
                os.kill(pid, signal.SIGKILL)
    assert "stopped unexpectedly" in str(exc.value.message)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = worker_pids(hive)
        if pids and pids != [pid]:
            try:
                r = client(queen, key).chat.completions.create(
                    model="crashy-llm", messages=MSG, max_tokens=4
                )
                break
            except openai.APIStatusError:
                pass
        time.sleep(0.3)
    else:
        raise AssertionError("the worker was not restarted")
    assert r.usage.completion_tokens == 4
    assert hive.proc.poll() is None


@pytest.mark.skipif(
    not os.environ.get("RBEE_REDIS_URL") or not os.environ.get("RBEE_DATABASE_URL"),
    reason="two queen replicas share state only through PostgreSQL and Redis",
)
def test_two_queens_share_hives_through_postgres_and_redis(deployment: Deployment) -> None:
    a = Queen(deployment)
    b = Queen(deployment)
    Hive(deployment, a, "only-on-a", [CHAT_MODEL])
    deployment.rbee("tenant", "create", "t1")
    key = deployment.rbee("key", "create", "--tenant", "t1").stdout.strip()
    # The hive's socket is held by queen A; queen B reaches it through Redis.
    b.wait_for_model("only-on-a", CHAT_MODEL)
    resp = client(b, key).chat.completions.create(model=CHAT_MODEL, messages=MSG, max_tokens=6)
    assert resp.usage.completion_tokens == 6
    chunks = list(
        client(b, key).chat.completions.create(
            model=CHAT_MODEL, messages=MSG, max_tokens=6, stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason == "length"


def test_rbee_up_serves_a_fresh_machine_and_stops_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RBEE_", "DJANGO_"))}
    env.update(
        {
            "RBEE_HOME": str(tmp_path / "home"),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
            "RBEE_LLAMA_THREADS": "1",
        }
    )
    # An up on a fresh machine uses the embedded default: no database or Redis to set up.
    proc = subprocess.Popen(
        [sys.executable, "-m", "rbee.cli", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    lines: list[str] = []
    key = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and key is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.match(r"API key: (sk-rbee-\S+)", line)
            if m:
                key = m.group(1)
        assert key, "".join(lines)
        assert (tmp_path / "home" / "rbee.sqlite3").exists()
        assert (tmp_path / "home" / "default-api-key").stat().st_mode & 0o077 == 0
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        r = api.chat.completions.create(model=CHAT_MODEL, messages=MSG, max_tokens=8)
        assert r.choices[0].message.content
        # Every modality out of the box, under OpenAI's model names too.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if len(api.models.list().data) >= 5:
                break
            time.sleep(0.5)
        assert len(api.models.list().data) >= 5, [m.id for m in api.models.list().data]
        assert len(api.embeddings.create(model="text-embedding-3-small", input="hi").data) == 1
        img = api.images.generate(
            model="dall-e-2", prompt="a bee", size="64x64", response_format="b64_json"
        )
        assert img.data[0].b64_json
        speech = api.audio.speech.create(model="tts-1", voice="alloy", input="Hello world.")
        heard = api.audio.transcriptions.create(model="whisper-1", file=("a.mp3", speech.read()))
        assert "hello" in heard.text.lower()
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 7  # queen, hive, a worker per modality
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        stop_process(proc)
