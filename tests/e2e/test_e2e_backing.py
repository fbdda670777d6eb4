"""Backing stores down: a queen whose Redis or PostgreSQL is down or blackholed answers /v1
requests 503 with Retry-After within seconds (never a hang, never a 500), in OpenAI's error
format, and serves again by itself once the store is back.

Redis: a redis-server of the test's own on a free port (the shared one is never touched),
frozen with SIGSTOP (a blackhole: connections open, nothing answered), then killed and
started again on the same port. PostgreSQL: the queen reaches the shared server through a
TCP forwarder of the test's own, which is paused (it holds every byte: a blackhole) and
resumed, then made to drop and refuse connections; the server itself is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
import pytest
import redis

from testkit.live import Deployment, Hive, Queen, free_port, stop_process

pytestmark = pytest.mark.e2e

MSG = [{"role": "user", "content": "Tell me about bees."}]
WITHIN_S = 5.0


def own_redis(port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed"
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    r = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.exceptions.ConnectionError):
            if r.ping():
                r.close()
                return proc
        time.sleep(0.05)
    raise AssertionError("redis-server did not start")


def clients(queen: Queen, dep: Deployment) -> list[openai.OpenAI]:
    """A tenant with limits (its requests meet the limiter in Redis first) and one without
    (they meet the channel layer first)."""
    out = []
    dep.rbee("plan", "defaults")  # free has limits, enterprise none
    for name, plan in (("limited", "free"), ("unlimited", "enterprise")):
        dep.rbee("tenant", "create", name, "--plan", plan)
        key = dep.rbee("key", "create", "--tenant", name).stdout.strip()
        out.append(
            openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0, timeout=30)
        )
    return out


def ask(c: openai.OpenAI) -> str:
    resp = c.chat.completions.create(model="echo-model", messages=MSG)
    return str(resp.choices[0].message.content)


def assert_unavailable(c: openai.OpenAI) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        ask(c)
    took = time.monotonic() - started
    err = exc.value
    assert err.status_code == 503, (err.status_code, err.response.text)
    assert took < WITHIN_S, f"the 503 took {took:.1f} s"
    assert int(err.response.headers["retry-after"]) >= 1
    body = err.response.json()["error"]
    assert body["type"] == "server_error" and body["code"] == "service_unavailable"
    assert set(body) == {"message", "type", "param", "code"}


def eventually(fn: Callable[[], Any], timeout: float = 90) -> Any:
    """fn's result once it stops raising (the service resumes by itself)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_redis_down_or_blackholed_is_a_503_and_service_resumes() -> None:
    port = free_port()
    server = own_redis(port)
    dep = Deployment()
    try:
        dep.env["RBEE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        dep.env["RBEE_CHANNEL_PREFIX"] = f"rbee-test-{uuid.uuid4().hex[:8]}"
        dep.env["RBEE_LIMITS_PREFIX"] = f"rbee-test-lim:{uuid.uuid4().hex[:8]}"
        queen = Queen(dep)
        Hive(dep, queen, "h1", ["echo-model=echo:"])
        for c in clients(queen, dep):
            assert ask(c) == "Tell me about bees."

            # Blackholed: the server takes connections and answers nothing.
            os.kill(server.pid, signal.SIGSTOP)
            try:
                assert_unavailable(c)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert eventually(lambda c=c: ask(c)) == "Tell me about bees."

            # Down: killed, connections refused; then back on the same port (empty).
            stop_process(server, signal.SIGKILL)
            assert_unavailable(c)
            server = own_redis(port)
            assert eventually(lambda c=c: ask(c)) == "Tell me about bees."
    finally:
        dep.close()
        stop_process(server, signal.SIGKILL)


class Forwarder:
    """A TCP forwarder from a free port to `target` on a thread of its own, which can hold
    every byte (`pause`: a blackhole) or drop and refuse connections (`cut`)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._start)

    def _call(self, fn: Callable[[], Any]) -> None:
        asyncio.run_coroutine_threadsafe(fn(), self.loop).result(10)

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    await self._flowing.wait()
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    def pause(self) -> None:
        self.loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self.loop.call_soon_threadsafe(self._flowing.set)

    def cut(self) -> None:
        async def cut() -> None:
            assert self._server is not None
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        self._call(cut)

    def restore(self) -> None:
        self._call(self._start)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def test_postgres_down_or_blackholed_is_a_503_and_service_resumes() -> None:
    base = os.environ.get("RBEE_DATABASE_URL", "")
    assert base, "this test needs RBEE_DATABASE_URL (PostgreSQL)"
    dep = Deployment()
    parts = urlsplit(dep.env["RBEE_DATABASE_URL"])
    proxy = Forwarder(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
        dep.env["RBEE_DATABASE_URL"] = urlunsplit(
            (parts.scheme, netloc, parts.path, parts.query, "")
        )
        queen = Queen(dep, env={"RBEE_DB_TIMEOUT": "3"})
        Hive(dep, queen, "h1", ["echo-model=echo:"])
        (c, _unlimited) = clients(queen, dep)
        assert ask(c) == "Tell me about bees."

        proxy.pause()  # blackholed: connections stay open, nothing comes back
        try:
            assert_unavailable(c)
        finally:
            proxy.resume()
        assert eventually(lambda: ask(c)) == "Tell me about bees."

        proxy.cut()  # down: connections dropped, new ones refused
        assert_unavailable(c)
        proxy.restore()
        assert eventually(lambda: ask(c)) == "Tell me about bees."
    finally:
        proxy.close()
        dep.close()
