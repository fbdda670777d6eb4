"""The hive agent: one outbound websocket to the queen, many jobs over it.

disconnected --connect+hello--> connected --socket lost--> disconnected
     ^   (backoff 0.5 s doubling to 30 s, with jitter)          |
     +----------------------------------------------------------+
refused (bad token, another hive's token, a protocol version the queen does not speak)
    --> exit with status 2: retrying cannot help.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hives import protocol
from hives.agent.devices import detect_devices
from hives.agent.status import StatusServer
from hives.agent.supervisor import WorkerProcess
from hives.spec import ModelSpec
from kernel import __version__

logger = logging.getLogger("hives.agent")

REFUSAL_CODES = (protocol.CLOSE_BAD_TOKEN, protocol.CLOSE_BAD_HELLO, protocol.CLOSE_BAD_VERSION)


class HiveRefused(Exception):
    """The queen refused this hive (wrong token, name or protocol): retrying cannot help."""


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.cap)
        return delay * (0.8 + 0.4 * random.random())

    def reset(self) -> None:
        self.current = self.first


def queen_ws_url(queen: str) -> str:
    """http://host:7833 -> ws://host:7833/hive/ws (https -> wss); ws URLs pass through."""
    parts = urlsplit(queen if "://" in queen else f"http://{queen}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(protocol.HIVE_WS_PATH):
        path += protocol.HIVE_WS_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class HiveAgent:
    def __init__(
        self,
        *,
        queen: str,
        token: str,
        name: str,
        models: list[ModelSpec],
        region: str = "",
        status_host: str = "127.0.0.1",
        status_port: int | None = 7835,
        heartbeat_interval: float = 5.0,
        load_timeout: float = 300.0,
        idle_unload: float = 900.0,
        recorded: bool = False,
    ) -> None:
        self.url = queen_ws_url(queen)
        self.token = token
        self.name = name
        self.region = region
        self.heartbeat_interval = heartbeat_interval
        self.load_timeout = load_timeout
        # One worker per (model, device); several devices may serve the same model.
        self.workers: dict[tuple[str, str], WorkerProcess] = {
            (m.name, m.device): WorkerProcess(m, on_change=self._worker_changed) for m in models
        }
        # Unpinned workers idle this long are unloaded (0: never); they reload on demand.
        self.idle_unload = idle_unload
        # Devices from a recorded inventory: their free memory never changes by itself,
        # so the memory of our own loaded workers is taken off it here.
        self.recorded = recorded
        self._placing = asyncio.Lock()  # one placement decision at a time
        self._reloading: dict[WorkerProcess, asyncio.Lock] = {}
        self._downloads: dict[int, asyncio.Future[None]] = {}
        self._spawning: set[tuple[str, str]] = set()
        self.ws: Any = None
        self.connected = False
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent job ids (dedup retries)
        self._job_worker: dict[str, WorkerProcess] = {}
        self._outbox: dict[str, list[dict[str, Any]]] = {}  # events not yet sent, per job
        self._flushing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self.status = (
            StatusServer(self, status_host, status_port) if status_port is not None else None
        )

    # --- what the queen sees --------------------------------------------------------

    def describe_workers(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.workers.values()]

    def hello(self) -> dict[str, Any]:
        return {
            "op": "hello",
            "protocol": protocol.PROTOCOL_VERSION,
            "name": self.name,
            "version": __version__,
            "region": self.region,
            "devices": detect_devices(),
            "workers": self.describe_workers(),
        }

    def heartbeat(self) -> dict[str, Any]:
        return {
            "op": "heartbeat",
            "devices": detect_devices(),
            "workers": self.describe_workers(),
            "inflight": sum(w.inflight for w in self.workers.values()),
        }

    async def _worker_changed(self) -> None:
        ws = self.ws
        if ws is not None and self.connected:
            try:
                await ws.send(protocol.dumps(self.heartbeat()))
            except ConnectionClosed:
                pass

    # --- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):
                pass  # no signal handlers here (Windows, or not the main thread)
        if self.status is not None:
            await self.status.start()
        for w in list(self.workers.values()):
            message = await self._make_room(w)
            if message:
                logger.error("%s", message)
                w.refuse(message)
            else:
                w.start()
        await asyncio.gather(
            *(
                w.wait_ready(self.load_timeout)
                for w in self.workers.values()
                if w.state != "refused"
            )
        )
        idler = asyncio.create_task(self._unload_idle())
        code = 0
        try:
            code = await self._connect_loop()
        finally:
            idler.cancel()
            await asyncio.gather(idler, return_exceptions=True)
            await asyncio.gather(*(w.stop() for w in self.workers.values()))
            if self.status is not None:
                await self.status.stop()
        return code

    async def _connect_loop(self) -> int:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                await self._session(backoff)
                reason: object = "the queen closed the connection"
            except HiveRefused as exc:
                logger.error("the queen refused this hive: %s", exc)
                return 2
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code in REFUSAL_CODES:
                    logger.error("the queen refused this hive: %s", exc.rcvd.reason or exc)
                    return 2
                reason = exc
            except (
                OSError,
                InvalidStatus,
                TimeoutError,
                websockets.exceptions.InvalidHandshake,
            ) as exc:
                reason = exc
            if self._stop.is_set():
                break
            delay = backoff.next()
            logger.warning(
                "queen at %s unreachable (%s); retrying in %.1f s", self.url, reason, delay
            )
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass
        return 0

    async def _session(self, backoff: Backoff) -> None:
        async with websockets.connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=64 * 2**20,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=10,
        ) as ws:
            await ws.send(protocol.dumps(self.hello()))
            first = protocol.loads(await asyncio.wait_for(ws.recv(), 15))
            if first.get("op") == "refused":
                raise HiveRefused(str(first.get("reason")))
            if first.get("op") != "welcome":
                raise HiveRefused(f"unexpected first message {first.get('op')!r}")
            self.heartbeat_interval = float(
                first.get("heartbeat_interval") or self.heartbeat_interval
            )
            self.ws = ws
            self.connected = True
            backoff.reset()
            logger.info("connected to the queen at %s as %s", self.url, self.name)
            beats = asyncio.create_task(self._heartbeats(ws))
            stopper = asyncio.create_task(self._stop.wait())
            reader = asyncio.create_task(self._reader(ws))
            try:
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    reader.result()  # re-raise ConnectionClosed
            finally:
                self.connected = False
                self.ws = None
                for t in (beats, stopper, reader):
                    t.cancel()
                await asyncio.gather(beats, stopper, reader, return_exceptions=True)
                await self._drop_jobs()

    async def _drop_jobs(self) -> None:
        """The socket is gone: the queen has failed these jobs, so stop working on them."""
        jobs, self._job_worker = self._job_worker, {}
        for job_id, worker in jobs.items():
            await worker.cancel(job_id)

    async def _heartbeats(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await ws.send(protocol.dumps(self.heartbeat()))

    async def _reader(self, ws: Any) -> None:
        async for raw in ws:
            try:
                msg = protocol.loads(raw)
            except (ValueError, json.JSONDecodeError):
                logger.warning("the queen sent a malformed frame; ignored")
                continue
            op = msg["op"]
            if op == "job":
                await self._on_job(ws, msg)
            elif op == "cancel":
                job_id = str(msg.get("id"))
                worker = self._job_worker.pop(job_id, None)
                if worker is not None:
                    logger.info("job %s cancelled by the queen", job_id)
                    await worker.cancel(job_id)
            elif op == "spawn":
                self._background(self._spawn(msg))
            elif op == "stop":
                key = (str(msg.get("model")), str(msg.get("device") or "cpu"))
                worker = self.workers.get(key)
                if worker is not None and worker.assigned:
                    logger.info("stopping %s on %s, as the queen asks", *key)
                    del self.workers[key]
                    await worker.stop()
                    await self._worker_changed()
            elif op == "worker":
                self._background(self._worker_order(msg))
            elif op == "download":
                self._start_download(msg)
            elif op == "refused":
                raise HiveRefused(str(msg.get("reason")))

    async def _spawn(self, msg: dict[str, Any]) -> None:
        """Load a model the queen assigned to this hive (and pinned, maybe)."""
        from dataclasses import replace

        from hives.agent.catalog import parse_model_arg
        from hives.agent.engines.base import EngineError

        try:
            spec = parse_model_arg(str(msg.get("spec")), device=str(msg.get("device") or "cpu"))
        except EngineError as exc:
            logger.error("cannot load %r as the queen asks: %s", msg.get("spec"), exc.message)
            return
        spec = replace(spec, pinned=bool(msg.get("pinned")))
        key = (spec.name, spec.device)
        existing = self.workers.get(key)
        if existing is not None and existing.state != "refused":
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
        worker = existing or WorkerProcess(spec, on_change=self._worker_changed)
        worker.assigned = True
        self.workers[key] = worker
        self._spawning.add(key)
        try:
            message = await self._make_room(worker)
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
        await self._worker_changed()

    def _start_download(self, msg: dict[str, Any]) -> None:
        """Fetch a model's files in the background, reporting progress to the queen."""
        download_id = int(msg.get("id") or 0)
        if download_id in self._downloads:
            return  # already running (the queen resent it)
        source = str(msg.get("source") or "")
        task = asyncio.ensure_future(self._download(download_id, source))
        self._downloads[download_id] = task
        task.add_done_callback(lambda _t: self._downloads.pop(download_id, None))

    async def _download(self, download_id: int, source: str) -> None:
        from hives.agent.catalog import models_dir
        from hives.agent.download import DownloadError, download, tree_size

        async def report(state: str, done: int = 0, total: int = 0, **extra: Any) -> None:
            ws = self.ws
            if ws is not None and self.connected:
                msg = {"op": "download", "id": download_id, "state": state}
                msg.update(done=done, total=total, **extra)
                try:
                    await ws.send(protocol.dumps(msg))
                except ConnectionClosed:
                    pass

        async def progress(done: int, total: int) -> None:
            await report("running", done, total)

        logger.info("downloading %s, as the queen asks", source)
        try:
            path = await download(source, await asyncio.to_thread(models_dir), progress)
        except DownloadError as exc:
            logger.error("download of %s failed: %s", source, exc)
            await report("failed", message=str(exc))
        except Exception as exc:  # the network, the disk: say so, and a retry resumes
            logger.exception("download of %s failed", source)
            await report("failed", message=f"{type(exc).__name__}: {exc}")
        else:
            logger.info("downloaded %s to %s", source, path)
            size = await asyncio.to_thread(tree_size, path)
            await report("done", size, size, path=str(path))

    async def _worker_order(self, msg: dict[str, Any]) -> None:
        """An operator's `rbee worker start|stop|restart`, relayed by the queen."""
        key = (str(msg.get("model")), str(msg.get("device") or "cpu"))
        worker = self.workers.get(key)
        action = str(msg.get("action"))
        if worker is None:
            logger.warning("no worker %s on %s for %r", *key, action)
            return
        logger.info("%s %s on %s, as the operator asks", action, *key)
        if action in ("stop", "restart") and worker.state not in ("stopped", "unloaded"):
            await worker.stop()
        elif action == "stop":
            worker.state = protocol.WorkerState.STOPPED  # unloaded: not reloaded on demand any more
        # (A failed worker restarts on its own, with backoff.)
        if action in ("start", "restart") and worker.state in ("stopped", "unloaded", "refused"):
            message = await self._make_room(worker)
            if message:
                logger.error("%s", message)
                worker.refuse(message)
            else:
                worker.start()
        await self._worker_changed()

    # --- memory: no two models fight over a device ------------------------------------

    def _estimate(self, spec: ModelSpec) -> int:
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

    def _device_entry(self, device: str) -> dict[str, Any] | None:
        kind, _, index = device.partition(":")
        for d in detect_devices():
            if d.get("kind") == kind and (kind == "cpu" or str(d.get("index")) == (index or "0")):
                return dict(d)
        return None

    async def _make_room(self, worker: WorkerProcess) -> str:
        """Check the model fits its device's free memory (live telemetry), unloading idle
        unpinned workers, least recently used first, when that makes room. Returns '' when
        it may load, else a message that says what is using the memory."""
        from hives.agent.memory import Resident, plan_placement

        async with self._placing:
            spec = worker.spec
            if not worker.memory_bytes:
                worker.memory_bytes = await asyncio.to_thread(self._estimate, spec)
            device = await asyncio.to_thread(self._device_entry, spec.device)
            if device is None:
                return f"cannot place {spec.name} on {spec.device}: this hive has no such device"
            residents = []
            for other in self.workers.values():
                if other is worker or other.spec.device != spec.device:
                    continue
                if other.state not in ("ready", "starting"):
                    continue
                residents.append(
                    Resident(
                        model=other.spec.name,
                        device=other.spec.device,
                        bytes=other.memory_bytes,
                        pinned=other.spec.pinned,
                        busy=other.inflight > 0,
                        last_used=other.last_used,
                        state=other.state,
                    )
                )
            if self.recorded:
                # A recorded device's telemetry never shows our loaded models: take them
                # off its free memory here, as a live reading would.
                loaded = sum(r.bytes for r in residents if r.state == "ready")
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

    async def _unload_idle(self) -> None:
        """Unload unpinned workers that have had no job for `idle_unload` seconds."""
        if self.idle_unload <= 0:
            return
        while True:
            await asyncio.sleep(min(5.0, self.idle_unload / 2))
            now = time.monotonic()
            for w in list(self.workers.values()):
                if (
                    w.state == "ready"
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

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_then_submit(
        self,
        job_id: str,
        worker: WorkerProcess,
        msg: dict[str, Any],
        send_event: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        reload = asyncio.ensure_future(self._reload(worker))
        # Tell the queen the job is alive while the model loads (its idle timeout).
        while not reload.done():
            await asyncio.wait({reload}, timeout=10)
            if not reload.done() and job_id in self._job_worker:
                await send_event({"kind": "loading", "model": worker.spec.name})
        problem = reload.result()
        if job_id not in self._job_worker:
            return  # cancelled while loading
        if problem:
            self._job_worker.pop(job_id, None)
            await send_event(protocol.error_event(problem, code="model_unavailable", status=503))
            return
        await self._submit(job_id, worker, msg, send_event)

    async def _submit(
        self,
        job_id: str,
        worker: WorkerProcess,
        msg: dict[str, Any],
        send_event: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if not await worker.submit(
            job_id, str(msg.get("task")), dict(msg.get("request") or {}), send_event
        ):
            self._job_worker.pop(job_id, None)
            await send_event(
                protocol.error_event(
                    f"the worker for {worker.spec.name!r} is not accepting jobs",
                    code="worker_unavailable",
                    status=503,
                )
            )

    async def _reload(self, worker: WorkerProcess) -> str:
        """Load an unloaded worker again for a job; '' once ready, else why not."""
        async with self._reloading.setdefault(worker, asyncio.Lock()):
            await worker.settled()  # an unload under way: let it finish
            if worker.state == "stopped":
                return f"{worker.spec.name} was stopped by an operator (rbee worker start)"
            if worker.state == "unloaded":
                message = await self._make_room(worker)
                if message:
                    return message
                logger.info("reloading %s on %s for a job", worker.spec.name, worker.spec.device)
                worker.start()
        if not await worker.wait_ready(self.load_timeout):
            return f"{worker.spec.name} did not load within {self.load_timeout:.0f} s"
        return ""

    def _worker_for(self, model: str, device: str) -> WorkerProcess | None:
        """The worker the queen chose; any ready one of the model if it named no device."""
        exact = self.workers.get((model, device))
        if exact is not None:
            return exact
        same = [w for (m, _d), w in self.workers.items() if m == model]
        return next((w for w in same if w.state == "ready"), same[0] if same else None)

    async def _flush(self, ws: Any, job_id: str) -> None:
        try:
            while True:
                await asyncio.sleep(0)  # let the worker's other ready lines join
                events = self._outbox.pop(job_id, None)
                if not events:
                    return
                if self.ws is ws:
                    await ws.send(protocol.dumps({"op": "events", "id": job_id, "events": events}))
        except ConnectionClosed:
            self._outbox.pop(job_id, None)
        finally:
            self._flushing.discard(job_id)

    async def _on_job(self, ws: Any, msg: dict[str, Any]) -> None:
        job_id = str(msg.get("id"))
        logger.debug("job %s for %s", job_id, msg.get("model"))
        if job_id in self._seen and job_id in self._job_worker:
            await ws.send(protocol.dumps({"op": "ack", "id": job_id}))  # a resend; still running
            return
        # New, or seen but no longer running here (cancelled by a reconnect): run it.
        self._seen[job_id] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)

        async def send_event(event: dict[str, Any]) -> None:
            """Queue the event; events that arrive in the same loop tick go in one frame."""
            if event.get("kind") in ("done", "error"):
                self._job_worker.pop(job_id, None)
                logger.debug("job %s %s", job_id, event.get("kind"))
            self._outbox.setdefault(job_id, []).append(event)
            if job_id not in self._flushing:
                self._flushing.add(job_id)
                task = asyncio.ensure_future(self._flush(ws, job_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        worker = self._worker_for(str(msg.get("model")), str(msg.get("device") or ""))
        if worker is not None and worker.state in ("unloaded", "starting", "stopping"):
            # Loaded on demand: acknowledge now (the queen must not resend), then load in
            # a task of its own, so this reader goes on serving other jobs and cancels.
            await ws.send(protocol.dumps({"op": "ack", "id": job_id}))
            self._job_worker[job_id] = worker
            self._background(self._load_then_submit(job_id, worker, msg, send_event))
            return
        if worker is None or worker.state != "ready":
            what = "is not served" if worker is None else f"is {worker.state}"
            await send_event(
                protocol.error_event(
                    f"model {msg.get('model')!r} {what} on hive {self.name!r}",
                    code="model_unavailable",
                    status=503,
                )
            )
            return
        await ws.send(protocol.dumps({"op": "ack", "id": job_id}))
        self._job_worker[job_id] = worker
        await self._submit(job_id, worker, msg, send_event)
