"""The hive's workers: one process per (model, device), placed so that no two models ever
fight over a device's memory.

    starting --> ready --(idle, unpinned)--> unloaded --(a job)--> starting
        |          |                            ^
        |          +--(room needed, LRU)--------+
        +--> refused (does not fit; the message says what uses the memory)

Every placement (a `--model` at start, the queen's `spawn`, an operator's `start`, a
reload for a job) goes through `make_room`: the model's estimate against the device's
free memory from live telemetry (hives/agent/memory.py decides), unloading idle unpinned
workers least recently used first when that makes room.

No socket here: the session (hives/agent/agent.py) turns the queen's orders into calls,
and `on_change` tells it when a worker's state changed (it sends a heartbeat at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hives.agent.devices import detect_devices
from hives.agent.memory import Resident, plan_placement
from hives.agent.policy import remote_code_refusal
from hives.agent.supervisor import WorkerProcess
from hives.protocol import WorkerAction, WorkerState
from hives.spec import REMOTE_ENGINES, Device, ModelSpec

logger = logging.getLogger("hives.agent")

Key = tuple[str, Device]  # (model, device)
OnChange = Callable[[], Awaitable[None]]


def estimate_bytes(spec: ModelSpec) -> int:
    """The model's memory estimate, without loading it (0 if unknown)."""
    from hives.agent.catalog import BUNDLED_PREFIX, bundled_memory
    from hives.agent.engines import get_engine

    if spec.source.startswith(BUNDLED_PREFIX):
        return bundled_memory(spec.source[len(BUNDLED_PREFIX) :])
    try:
        return int(get_engine(spec.engine).memory_estimate_bytes(spec))
    except Exception as exc:
        logger.warning("no memory estimate for %s: %s", spec.name, exc)
        return 0


class WorkerPool:
    """The workers of one hive and the memory they hold.

    `devices` (live telemetry, hives.agent.devices' dicts), `estimate` (a spec's bytes)
    and `make_worker` can be injected, so the pool is tested without processes,
    GPUs or a socket.
    """

    def __init__(
        self,
        models: list[ModelSpec],
        *,
        on_change: OnChange | None = None,
        devices: Callable[[], list[dict[str, Any]]] = detect_devices,
        estimate: Callable[[ModelSpec], int] = estimate_bytes,
        make_worker: Callable[[ModelSpec, OnChange | None], WorkerProcess] | None = None,
        load_timeout: float = 300.0,
        idle_unload: float = 900.0,
        recorded: bool = False,
        allow_remote_code: bool = False,
    ) -> None:
        self.on_change = on_change
        # `rbee hive start --allow-remote-code`: models asking trust_remote_code load.
        self.allow_remote_code = allow_remote_code
        self.devices = devices
        self.estimate = estimate
        self._make_worker = make_worker or (lambda spec, cb: WorkerProcess(spec, on_change=cb))
        self.load_timeout = load_timeout
        # Unpinned workers idle this long are unloaded (0: never); they reload on demand.
        self.idle_unload = idle_unload
        # Devices from a recorded inventory: their free memory never changes by itself,
        # so the memory of our own loaded workers is taken off it here.
        self.recorded = recorded
        # Several devices may serve the same model: one worker per (model, device).
        self.workers: dict[Key, WorkerProcess] = {
            (m.name, m.device): self._make_worker(m, on_change) for m in models
        }
        self._start_workers = list(self.workers.values())  # placed by start()
        self._placing = asyncio.Lock()  # one placement decision at a time
        self._reloading: dict[WorkerProcess, asyncio.Lock] = {}
        self._spawning: set[Key] = set()

    # --- what the queen sees --------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.workers.values()]

    @property
    def inflight(self) -> int:
        return sum(w.inflight for w in self.workers.values())

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    # --- the whole pool -----------------------------------------------------------------

    async def start(self) -> None:
        """Place the models the hive was started with and start loading them; returns
        without waiting for them to load. Each worker reports `starting` until its model
        is up, then `ready` (or `refused`/`failed`, with the reason) through `on_change`,
        so the hive says hello at once and the queen holds requests meanwhile."""
        for worker in self._start_workers:
            await self._place(worker, quiet=False)

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers.values()))

    async def _place(self, worker: WorkerProcess, *, quiet: bool) -> bool:
        """Start `worker` if it fits (making room), else refuse it with the reason."""
        problem = remote_code_refusal(worker.spec, allow=self.allow_remote_code)
        if problem:
            logger.error("%s", problem)
            worker.fail(problem)
            return False
        message = await self.make_room(worker)
        if message:
            if not quiet:
                logger.error("%s", message)
            worker.refuse(message)
            return False
        worker.start()
        return True

    # --- orders -------------------------------------------------------------------------

    async def spawn(self, spec: ModelSpec) -> None:
        """Load a model the queen assigned to this hive (and pinned, maybe)."""
        key = (spec.name, spec.device)
        existing = self.workers.get(key)
        if existing is not None and existing.state != WorkerState.REFUSED:
            return  # already here (starting, ready, unloaded or restarting)
        if key in self._spawning:
            return  # a placement for it is being decided right now
        retry = existing is not None
        if not retry:
            logger.info(
                "loading %s on %s, as the queen asks%s",
                spec.name,
                spec.device,
                " (pinned)" if spec.pinned else "",
            )
        worker = existing or self._make_worker(spec, self.on_change)
        worker.assigned = True
        self.workers[key] = worker
        problem = remote_code_refusal(spec, allow=self.allow_remote_code)
        if problem:
            logger.error("%s", problem)
            worker.fail(problem)
            await self._changed()
            return
        self._spawning.add(key)
        try:
            message = await self.make_room(worker)
        finally:
            self._spawning.discard(key)
        if message:
            # A refused model is tried again with each heartbeat; say so once.
            if not retry or message != worker.message:
                logger.error("%s", message)
            worker.refuse(message)
        else:
            if retry:
                logger.info("%s now fits on %s; loading it", spec.name, spec.device)
            worker.start()
        await self._changed()

    async def fail(self, spec: ModelSpec, message: str) -> None:
        """Record a model the queen asked for that this hive will not load, as a failed
        worker with the reason (the queen and `rbee worker list` show it)."""
        key = (spec.name, spec.device)
        worker = self.workers.get(key)
        if worker is not None and worker.state in (WorkerState.READY, WorkerState.STARTING):
            return  # already running from an allowed spec: leave it
        if worker is None:
            worker = self._make_worker(spec, self.on_change)
            worker.assigned = True
            self.workers[key] = worker
        worker.fail(message)
        await self._changed()

    async def stop_assigned(self, model: str, device: Device) -> None:
        """Unload a model the queen had assigned and no longer wants (`rbee model rm`)."""
        worker = self.workers.get((model, device))
        if worker is None or not worker.assigned:
            return
        logger.info("stopping %s on %s, as the queen asks", model, device)
        del self.workers[(model, device)]
        await worker.stop()
        await self._changed()

    async def order(self, action: WorkerAction, model: str, device: Device) -> None:
        """An operator's `rbee worker start|stop|restart`, relayed by the queen."""
        worker = self.workers.get((model, device))
        if worker is None:
            logger.warning("no worker %s on %s for %r", model, device, str(action))
            return
        logger.info("%s %s on %s, as the operator asks", action, model, device)
        if action in (WorkerAction.STOP, WorkerAction.RESTART) and worker.state not in (
            WorkerState.STOPPED,
            WorkerState.UNLOADED,
        ):
            await worker.stop()
        elif action == WorkerAction.STOP:
            worker.state = WorkerState.STOPPED  # unloaded: not reloaded on demand any more
        # (A failed worker restarts on its own, with backoff.)
        if action in (WorkerAction.START, WorkerAction.RESTART) and worker.state in (
            WorkerState.STOPPED,
            WorkerState.UNLOADED,
            WorkerState.REFUSED,
        ):
            await self._place(worker, quiet=False)
        await self._changed()

    # --- jobs ---------------------------------------------------------------------------

    def worker_for(self, model: str, device: Device | None) -> WorkerProcess | None:
        """The worker the queen chose; any ready one of the model if it named no device
        (or one this hive does not have)."""
        exact = self.workers.get((model, device)) if device is not None else None
        if exact is not None:
            return exact
        same = [w for (m, _d), w in self.workers.items() if m == model]
        return next((w for w in same if w.state == WorkerState.READY), same[0] if same else None)

    async def reload(self, worker: WorkerProcess) -> str:
        """Load an unloaded worker again for a job; '' once ready, else why not."""
        async with self._reloading.setdefault(worker, asyncio.Lock()):
            await worker.settled()  # an unload under way: let it finish
            if worker.state == WorkerState.STOPPED:
                return f"{worker.spec.name} was stopped by an operator (rbee worker start)"
            if worker.state == WorkerState.UNLOADED:
                message = remote_code_refusal(worker.spec, allow=self.allow_remote_code)
                message = message or await self.make_room(worker)
                if message:
                    return message
                logger.info("reloading %s on %s for a job", worker.spec.name, worker.spec.device)
                worker.start()
        if not await worker.wait_ready(self.load_timeout):
            return f"{worker.spec.name} did not load within {self.load_timeout:.0f} s"
        return ""

    # --- memory: no two models fight over a device ------------------------------------

    def _device_entry(self, device: Device) -> dict[str, Any] | None:
        return next((dict(d) for d in self.devices() if device.describes(d)), None)

    async def make_room(self, worker: WorkerProcess) -> str:
        """Check the model fits its device's free memory (live telemetry), unloading idle
        unpinned workers, least recently used first, when that makes room. Returns '' when
        it may load, else a message that says what is using the memory."""
        async with self._placing:
            spec = worker.spec
            if spec.engine in REMOTE_ENGINES:
                return ""  # its model runs elsewhere: nothing to place
            if not worker.memory_bytes:
                worker.memory_bytes = await asyncio.to_thread(self.estimate, spec)
            device = await asyncio.to_thread(self._device_entry, spec.device)
            if device is None:
                return f"cannot place {spec.name} on {spec.device}: this hive has no such device"
            residents = [
                Resident(
                    model=other.spec.name,
                    device=other.spec.device,
                    bytes=other.memory_bytes,
                    pinned=other.spec.pinned,
                    busy=other.inflight > 0,
                    last_used=other.last_used,
                    state=other.state,
                )
                for other in self.workers.values()
                if other is not worker
                and other.spec.engine not in REMOTE_ENGINES
                and other.spec.device == spec.device
                and other.state in (WorkerState.READY, WorkerState.STARTING)
            ]
            if self.recorded:
                # A recorded device's telemetry never shows our loaded models: take them
                # off its free memory here, as a live reading would.
                loaded = sum(r.bytes for r in residents if r.state == WorkerState.READY)
                device["memory_free_mb"] = max(
                    0, int(device.get("memory_free_mb") or 0) - loaded // 2**20
                )
                device["memory_used_mb"] = int(device.get("memory_used_mb") or 0) + loaded // 2**20
            plan = plan_placement(
                model=spec.name, need_bytes=worker.memory_bytes, device=device, residents=residents
            )
            if not plan.fits:
                return plan.message
            for name in plan.evict:
                victim = self.workers.get((name, spec.device))
                if victim is not None:
                    logger.info(
                        "unloading %s from %s to make room for %s", name, spec.device, spec.name
                    )
                    await victim.unload()
            return ""

    async def unload_idle(self, now: float | None = None) -> list[WorkerProcess]:
        """Unload the unpinned workers that have had no job for `idle_unload` seconds."""
        now = time.monotonic() if now is None else now
        unloaded = []
        for w in list(self.workers.values()):
            if (
                w.state == WorkerState.READY
                and not w.spec.pinned
                and w.inflight == 0
                and now - w.last_used >= self.idle_unload
            ):
                logger.info(
                    "unloading %s from %s after %.0f s idle",
                    w.spec.name,
                    w.spec.device,
                    now - w.last_used,
                )
                await w.unload()
                unloaded.append(w)
        return unloaded

    async def unload_idle_forever(self) -> None:
        if self.idle_unload <= 0:
            return
        while True:
            await asyncio.sleep(min(5.0, self.idle_unload / 2))
            await self.unload_idle()
