"""The hive's worker pool without a socket, processes or GPUs: placement, LRU eviction,
idle unload, reload on demand and the queen's and operators' orders."""

from __future__ import annotations

from typing import Any

import pytest

from hives.agent.pool import WorkerPool
from hives.agent.supervisor import WorkerProcess
from hives.protocol import WorkerAction, WorkerState
from hives.spec import Device, ModelSpec

pytestmark = pytest.mark.asyncio

GiB = 2**30
CUDA0 = Device("cuda:0")


class FakeWorker(WorkerProcess):
    """A WorkerProcess whose process starts and stops at once (its state machine is the
    real one)."""

    def __init__(self, spec: ModelSpec, on_change: Any = None) -> None:
        super().__init__(spec, on_change=on_change)
        self.starts = 0
        self.stops = 0

    def start(self) -> None:
        self.starts += 1
        self.state = WorkerState.READY
        self._ready.set()

    async def stop(
        self, timeout: float = 10.0, *, final_state: WorkerState = WorkerState.STOPPED
    ) -> None:
        self.stops += 1
        self._ready.clear()
        self.state = final_state


def gpu(total_gib: float, free_gib: float, index: int = 0) -> dict[str, Any]:
    total, free = int(total_gib * 1024), int(free_gib * 1024)
    return {
        "index": index,
        "kind": "cuda",
        "name": "test",
        "gpu_type": "RTX4090",
        "memory_total_mb": total,
        "memory_free_mb": free,
        "memory_used_mb": total - free,
    }


def spec(name: str, *, device: str = "cuda:0", pinned: bool = False) -> ModelSpec:
    return ModelSpec(name=name, engine="echo", source="", device=device, pinned=pinned)


def pool(
    models: list[ModelSpec],
    devices: list[dict[str, Any]],
    sizes: dict[str, float],
    **kw: Any,
) -> WorkerPool:
    changes: list[None] = []

    async def changed() -> None:
        changes.append(None)

    p = WorkerPool(
        models,
        on_change=changed,
        devices=lambda: devices,
        estimate=lambda s: int(sizes[s.name] * GiB),
        make_worker=FakeWorker,
        load_timeout=1.0,
        **kw,
    )
    p.changes = changes  # type: ignore[attr-defined]
    return p


def ready(p: WorkerPool, name: str, *, last_used: float, device: Device = CUDA0) -> FakeWorker:
    w = p.workers[(name, device)]
    assert isinstance(w, FakeWorker)
    w.start()
    w.memory_bytes = 0  # estimated again by make_room when needed
    w.last_used = last_used
    return w


async def test_making_room_unloads_the_least_recently_used_idle_unpinned_worker() -> None:
    # 24 GiB card, 4 GiB free; four 6 GiB models loaded.
    models = [spec("pinned-old", pinned=True), spec("old"), spec("busy"), spec("recent")]
    sizes = {"pinned-old": 6, "old": 6, "busy": 6, "recent": 6, "new": 8}
    p = pool(models, [gpu(24, 4)], sizes)
    pinned = ready(p, "pinned-old", last_used=1)
    old = ready(p, "old", last_used=2)
    busy = ready(p, "busy", last_used=0)  # the oldest of all, but running a job
    busy.sinks["job"] = lambda e: None  # type: ignore[assignment,return-value]
    recent = ready(p, "recent", last_used=9)
    for w in (pinned, old, busy, recent):
        w.memory_bytes = 6 * GiB

    new = FakeWorker(spec("new"))
    assert await p.make_room(new) == ""
    assert old.state == WorkerState.UNLOADED  # 4 - 0.25 + 6 >= 8: one is enough
    assert (pinned.state, busy.state, recent.state) == (WorkerState.READY,) * 3
    assert new.memory_bytes == 8 * GiB  # estimated once, kept


async def test_a_model_that_does_not_fit_is_refused_with_what_uses_the_memory() -> None:
    p = pool([spec("pinned", pinned=True)], [gpu(24, 4)], {"pinned": 18, "huge": 12})
    pinned = ready(p, "pinned", last_used=0)
    pinned.memory_bytes = 18 * GiB
    await p.spawn(spec("huge"))
    huge = p.workers[("huge", CUDA0)]
    assert huge.state == WorkerState.REFUSED
    assert huge.assigned
    assert "cannot place huge on cuda:0" in huge.message
    assert "pinned 18.0 GiB (pinned)" in huge.message
    assert pinned.state == WorkerState.READY  # a pinned worker is never evicted
    assert p.changes  # type: ignore[attr-defined]  # the queen hears of it at once


async def test_a_device_the_hive_does_not_have_is_refused() -> None:
    p = pool([], [gpu(24, 24)], {"m": 1})
    await p.spawn(spec("m", device="rocm:3"))
    w = p.workers[("m", Device("rocm:3"))]
    assert w.state == WorkerState.REFUSED
    assert w.message == "cannot place m on rocm:3: this hive has no such device"


async def test_spawn_loads_once_and_retries_a_refused_model_when_it_fits() -> None:
    devices = [gpu(24, 2)]
    p = pool([], devices, {"m": 8})
    await p.spawn(spec("m", pinned=True))
    w = p.workers[("m", CUDA0)]
    assert w.state == WorkerState.REFUSED
    devices[0] = gpu(24, 20)  # memory was freed elsewhere
    await p.spawn(spec("m", pinned=True))
    assert w.state == WorkerState.READY
    assert p.workers[("m", CUDA0)] is w
    await p.spawn(spec("m", pinned=True))  # already here: nothing happens
    assert isinstance(w, FakeWorker) and w.starts == 1


async def test_idle_unpinned_workers_are_unloaded_and_others_kept() -> None:
    models = [spec("idle"), spec("pinned", pinned=True), spec("busy"), spec("fresh")]
    p = pool(models, [gpu(24, 24)], {}, idle_unload=60.0)
    idle = ready(p, "idle", last_used=100.0)
    pinned = ready(p, "pinned", last_used=100.0)
    busy = ready(p, "busy", last_used=100.0)
    busy.sinks["job"] = lambda e: None  # type: ignore[assignment,return-value]
    fresh = ready(p, "fresh", last_used=150.0)
    assert await p.unload_idle(now=170.0) == [idle]
    assert idle.state == WorkerState.UNLOADED
    assert {w.state for w in (pinned, busy, fresh)} == {WorkerState.READY}


async def test_an_unloaded_worker_is_reloaded_for_a_job_making_room_first() -> None:
    p = pool([spec("a"), spec("b")], [gpu(24, 3)], {"a": 10, "b": 10})
    a = ready(p, "a", last_used=1)
    b = ready(p, "b", last_used=2)
    a.memory_bytes = b.memory_bytes = 10 * GiB
    await a.unload()
    assert p.worker_for("a", CUDA0) is a
    # 3 GiB free (as telemetry says, with b loaded) is not enough: b, idle, makes room.
    assert await p.reload(a) == ""
    assert a.state == WorkerState.READY
    assert b.state == WorkerState.UNLOADED


async def test_a_stopped_worker_is_not_reloaded_on_demand() -> None:
    p = pool([spec("a")], [gpu(24, 24)], {"a": 1})
    a = ready(p, "a", last_used=1)
    await p.order(WorkerAction.STOP, "a", CUDA0)
    assert a.state == WorkerState.STOPPED
    assert "stopped by an operator" in await p.reload(a)
    await p.order(WorkerAction.START, "a", CUDA0)
    assert a.state == WorkerState.READY


async def test_the_queen_chooses_a_worker_or_any_ready_one_of_the_model() -> None:
    p = pool([spec("m", device="cuda:0"), spec("m", device="cuda:1")], [], {})
    on1 = ready(p, "m", last_used=0, device=Device("cuda:1"))
    assert p.worker_for("m", Device("cuda:0")) is p.workers[("m", CUDA0)]
    assert p.worker_for("m", None) is on1  # no device named: a ready one
    assert p.worker_for("m", Device("cuda:7")) is on1
    assert p.worker_for("other", None) is None


async def test_stop_only_unloads_what_the_queen_assigned() -> None:
    p = pool([spec("mine")], [gpu(24, 24)], {"mine": 1, "theirs": 1})
    await p.spawn(spec("theirs"))
    await p.stop_assigned("mine", CUDA0)  # from the hive's own --model: kept
    await p.stop_assigned("theirs", CUDA0)
    assert list(p.workers) == [("mine", CUDA0)]


async def test_recorded_devices_count_our_own_loaded_models() -> None:
    # A recorded inventory's free memory never moves: 20 GiB "free" with 16 GiB of our
    # own models loaded really is 4 GiB.
    models = [spec("a", pinned=True), spec("b", pinned=True)]
    p = pool(models, [gpu(24, 20)], {"a": 8, "b": 8, "c": 8}, recorded=True)
    for name in ("a", "b"):
        ready(p, name, last_used=0).memory_bytes = 8 * GiB
    c = FakeWorker(spec("c"))
    assert "cannot place c on cuda:0" in await p.make_room(c)
    live = pool(models, [gpu(24, 20)], {"a": 8, "b": 8, "c": 8})
    for name in ("a", "b"):
        ready(live, name, last_used=0).memory_bytes = 8 * GiB
    assert await live.make_room(FakeWorker(spec("c"))) == ""


async def test_start_places_every_model_and_refuses_what_does_not_fit() -> None:
    p = pool([spec("small"), spec("big")], [gpu(24, 10)], {"small": 4, "big": 30})
    await p.start()
    states = {k[0]: w.state for k, w in p.workers.items()}
    assert states == {"small": WorkerState.READY, "big": WorkerState.REFUSED}
    assert p.describe()[1]["state"] == "refused"
    await p.stop()
    assert {w.state for w in p.workers.values()} == {WorkerState.STOPPED}


async def test_a_worker_stopped_while_its_process_is_being_spawned_stops() -> None:
    """A hive refused by the queen stops its pool at once, while its start workers may be
    still spawning (they load beside the hello). A stop that finds no process yet must not
    wait for ever on a worker that is then spawned and never told to exit."""
    import asyncio
    import time

    from hives.agent.supervisor import WorkerProcess
    from hives.spec import ModelSpec

    for _ in range(3):
        worker = WorkerProcess(ModelSpec(name="echo", engine="echo", source=""))
        worker.start()
        await asyncio.sleep(0)  # the task runs up to the spawn
        assert worker.proc is None
        began = time.monotonic()
        await asyncio.wait_for(worker.stop(timeout=5), 20)
        assert time.monotonic() - began < 15
        assert worker.proc is None or worker.proc.returncode is not None


async def test_an_upstream_model_never_unloads_a_local_one_nor_is_unloaded() -> None:
    """A model served by another server (the openai engine) takes no device memory: on a
    full card it is placed without unloading anything, and a local model that needs room
    is not given the upstream model's (empty) place."""
    local = spec("local")
    upstream = ModelSpec(name="cloud", engine="openai", source="http://x/v1", device="cuda:0")
    devices = [gpu(24, 0.1)]
    p = pool([local, upstream], devices, {"local": 6, "cloud": 0, "new": 8})
    old = ready(p, "local", last_used=1)
    old.memory_bytes = 6 * GiB
    cloud = p.workers[("cloud", CUDA0)]
    assert await p.make_room(cloud) == ""  # the card is full: nothing unloaded for it
    assert old.state == WorkerState.READY
    cloud.start()
    cloud.last_used = 0  # the least recently used of all
    devices[0] = gpu(24, 4)
    new = FakeWorker(spec("new"))
    assert await p.make_room(new) == ""
    assert old.state == WorkerState.UNLOADED  # the local model made room, not cloud
    assert cloud.state == WorkerState.READY
