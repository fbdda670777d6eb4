"""A hive connects at once: its hello goes out while its start models are still loading,
listing them as `starting`, and each worker's next state (ready, or refused with the
memory planner's reason) reaches the queen when it happens, not at the next heartbeat.
A small websocket server stands in for the queen."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from hives.agent.agent import HiveAgent
from hives.agent.pool import WorkerPool
from hives.agent.supervisor import WorkerProcess
from hives.protocol import PROTOCOL_VERSION, WorkerState
from hives.spec import CPU, ModelSpec

pytestmark = pytest.mark.asyncio

GiB = 2**30


class SlowWorker(WorkerProcess):
    """A worker whose model loads when the test says so (its state machine is the real
    one; no process)."""

    loaded: asyncio.Event

    def start(self) -> None:
        self._stopping = False
        self._ready.clear()
        self.state = WorkerState.STARTING
        self._task = asyncio.create_task(self._load())

    async def _load(self) -> None:
        await self.loaded.wait()
        self.state = WorkerState.READY
        self._ready.set()

    async def stop(
        self, timeout: float = 10.0, *, final_state: WorkerState = WorkerState.STOPPED
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._ready.clear()
        self.state = final_state


class FakeQueen:
    """Welcomes one hive (heartbeats every 60 s, so every report the test sees in time is
    one sent out of turn) and keeps every frame it sends."""

    def __init__(self, welcome: asyncio.Event | None = None) -> None:
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.server: Any = None
        self.welcome = welcome  # set: the welcome may go (None: at once)

    async def handler(self, ws: Any) -> None:
        hello = json.loads(await ws.recv())
        await self.frames.put(hello)
        if self.welcome is not None:
            await self.welcome.wait()
        await ws.send(json.dumps({"op": "welcome", "hive": "h", "heartbeat_interval": 60}))
        async for raw in ws:
            await self.frames.put(json.loads(raw))

    async def __aenter__(self) -> FakeQueen:
        self.server = await websockets.serve(self.handler, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        return await asyncio.wait_for(self.frames.get(), timeout)


def agent_for(queen: FakeQueen, sizes: dict[str, int], loaded: asyncio.Event) -> HiveAgent:
    models = [ModelSpec(name=name, engine="echo", source="", device=CPU) for name in sizes]
    agent = HiveAgent(queen=queen.url, token="t", name="h", models=models, status_port=None)

    def make_worker(spec: ModelSpec, on_change: Any) -> WorkerProcess:
        worker = SlowWorker(spec, on_change=on_change)
        worker.loaded = loaded
        return worker

    cpu = {"index": 0, "kind": "cpu", "name": "cpu", "gpu_type": "CPU"}
    cpu |= {"memory_total_mb": 16384, "memory_free_mb": 8192, "memory_used_mb": 8192}
    agent.pool = WorkerPool(
        models,
        on_change=agent._worker_changed,
        devices=lambda: [cpu],
        estimate=lambda spec: sizes[spec.name],
        make_worker=make_worker,
        load_timeout=30,
    )
    return agent


def states(frame: dict[str, Any]) -> dict[str, str]:
    return {w["model"]: w["state"] for w in frame["workers"]}


async def test_the_hello_goes_out_before_a_slow_model_has_loaded() -> None:
    loaded = asyncio.Event()
    async with FakeQueen() as queen:
        agent = agent_for(queen, {"slow-llm": 1 * GiB}, loaded)
        running = asyncio.create_task(agent.run())
        try:
            hello = await queen.next()  # today's hive waited for the model: no hello at all
            assert not loaded.is_set()
            assert (hello["op"], hello["protocol"], hello["name"]) == (
                "hello",
                PROTOCOL_VERSION,
                "h",
            )
            assert states(hello) == {"slow-llm": "starting"}
            # Nothing more while it loads (the next beat is a minute away).
            await asyncio.sleep(0.3)
            assert queen.frames.empty()
            loaded.set()
            beat = await queen.next(timeout=2)  # at once, not at the next heartbeat
            assert beat["op"] == "heartbeat"
            assert states(beat) == {"slow-llm": "ready"}
            assert agent.connected
        finally:
            agent.stop()
            assert await asyncio.wait_for(running, 10) == 0


async def test_a_start_model_that_does_not_fit_is_reported_refused_with_the_planners_reason() -> (
    None
):
    loaded = asyncio.Event()
    async with FakeQueen() as queen:
        # 8 GiB free on the device: the 4 GiB model loads, the 40 GiB one is refused.
        agent = agent_for(queen, {"small": 4 * GiB, "huge": 40 * GiB}, loaded)
        running = asyncio.create_task(agent.run())
        try:
            frames = [await queen.next()]
            while states(frames[-1]).get("huge") != "refused":
                frames.append(await queen.next(timeout=2))
            assert frames[0]["op"] == "hello"
            assert states(frames[0])["small"] == "starting"
            assert not loaded.is_set()
            refused = {w["model"]: w for w in frames[-1]["workers"]}["huge"]
            assert refused["message"].startswith("cannot place huge on cpu")
            assert states(frames[-1])["small"] == "starting"
            loaded.set()
            beat = await queen.next(timeout=2)
            assert states(beat) == {"small": "ready", "huge": "refused"}
        finally:
            agent.stop()
            assert await asyncio.wait_for(running, 10) == 0


async def test_a_change_while_the_queen_answers_the_hello_is_sent_after_the_welcome() -> None:
    loaded, welcome = asyncio.Event(), asyncio.Event()
    async with FakeQueen(welcome) as queen:
        agent = agent_for(queen, {"slow-llm": 1 * GiB}, loaded)
        running = asyncio.create_task(agent.run())
        try:
            hello = await queen.next()
            assert states(hello) == {"slow-llm": "starting"}
            loaded.set()  # ready before the welcome: its report cannot go yet
            await asyncio.sleep(0.2)
            assert queen.frames.empty()
            welcome.set()
            beat = await queen.next(timeout=2)  # right after the welcome, not in a minute
            assert (beat["op"], states(beat)) == ("heartbeat", {"slow-llm": "ready"})
        finally:
            agent.stop()
            assert await asyncio.wait_for(running, 10) == 0
