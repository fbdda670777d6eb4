"""The hive agent's session with the queen: one outbound websocket, many jobs over it.

disconnected --connect+hello--> connected --socket lost--> disconnected
     ^   (backoff 0.5 s doubling to 30 s, with jitter)          |
     +----------------------------------------------------------+
refused (bad token, another hive's token, a protocol version the queen does not speak)
    --> exit with status 2: retrying cannot help.

Over wss:// the queen's certificate chain and host name are verified (kernel/tls.py):
against this machine's CAs, or only the CA certificates of `--ca FILE`. A certificate
that fails (another CA, another name, expired) is logged with the reason and retried with
the same backoff: the queen's operator may be fixing it, and nothing is sent before the
check passes.

The session speaks hives/protocol.py: it says hello, beats, reads the queen's orders and
relays jobs to workers and their events back. It connects at once: the hello lists the
start models as `starting` while they load, and every change of a worker's state is
reported when it happens (a heartbeat out of turn), so the queen learns `ready`,
`refused` or `failed` (with the reason) without waiting for the next beat. The workers
and their memory are the pool's (hives/agent/pool.py); downloads run in
hives/agent/download.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hives.agent.catalog import parse_model_arg
from hives.agent.devices import detect_devices
from hives.agent.download import Downloads
from hives.agent.engines.base import EngineError
from hives.agent.policy import (
    granted_upstreams,
    insecure_queen_refusal,
    local_path_refusal,
    upstream_url_refusal,
)
from hives.agent.pool import WorkerPool
from hives.agent.status import StatusServer
from hives.agent.supervisor import WorkerProcess
from hives.protocol import (
    BATCH_VERSION,
    CLOSE_BAD_HELLO,
    CLOSE_BAD_TOKEN,
    CLOSE_BAD_VERSION,
    FINAL_KINDS,
    HIVE_WS_PATH,
    PROTOCOL_VERSION,
    EventKind,
    Op,
    WorkerAction,
    WorkerState,
    batch_frames,
    dumps,
    error_event,
    loads,
)
from hives.spec import CPU, Device, ModelArg, ModelSpec, SpecError
from kernel import __version__
from kernel.tls import client_context, verify_failure

logger = logging.getLogger("hives.agent")

REFUSAL_CODES = (CLOSE_BAD_TOKEN, CLOSE_BAD_HELLO, CLOSE_BAD_VERSION)
LOADING_KEEPALIVE = 10.0  # seconds between `loading` events while a model loads for a job

SendEvent = Callable[[dict[str, Any]], Awaitable[None]]


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
    if not path.endswith(HIVE_WS_PATH):
        path += HIVE_WS_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def check_queen_url(queen: str, *, insecure: bool = False) -> str:
    """The queen's websocket URL; ValueError when the hive must not connect to it (ws://
    beyond loopback without --insecure)."""
    url = queen_ws_url(queen)
    problem = insecure_queen_refusal(url, insecure=insecure)
    if problem:
        raise ValueError(problem)
    return url


def _tls_required(exc: object) -> bool:
    """Whether `exc` is the queen's answer to plain HTTP on its TLS port (rbee/server.py)."""
    if not isinstance(exc, InvalidStatus) or exc.response.status_code != 400:
        return False
    return b'"tls_required"' in (exc.response.body or b"")


def _device(msg: dict[str, Any], *, default: Device | None = CPU) -> Device | None:
    """The `device` of one of the queen's messages; `default` when it names none."""
    raw = msg.get("device")
    if not raw:
        return default
    try:
        return Device(str(raw))
    except SpecError as exc:
        logger.warning("the queen sent %r: %s; ignored", msg.get("op"), exc)
        return None


def _is_path(source: str) -> bool:
    return bool(source) and (source.startswith(("/", "./", "../", "~")) or Path(source).exists())


def _queen_named_source(arg: str) -> bool:
    """Whether a spawn's spec names its own source (NAME=ENGINE:SOURCE), rather than a
    bundled or well-known model this hive resolves itself."""
    try:
        return bool(ModelArg.parse(arg).engine)
    except SpecError:
        return True


def _states(workers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(w.get("model"), w.get("device"), w.get("state")) for w in workers]


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
        allow_remote_code: bool = False,
        insecure: bool = False,
        ca: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
    ) -> None:
        self.url = check_queen_url(queen, insecure=insecure)
        # wss://: the queen's certificate is checked against `ca` (a file of CA
        # certificates) or this machine's CAs, for `server_name` or the URL's host.
        # TLSFilesError (a ValueError) for a CA file that cannot be used.
        self.ca = ca
        self.server_name = server_name
        self.ssl: ssl.SSLContext | None = (
            client_context(ca) if urlsplit(self.url).scheme == "wss" else None
        )
        self.token = token
        self.name = name
        self.region = region
        self.heartbeat_interval = heartbeat_interval
        self.pool = WorkerPool(
            models,
            on_change=self._worker_changed,
            load_timeout=load_timeout,
            idle_unload=idle_unload,
            recorded=recorded,
            allow_remote_code=allow_remote_code,
        )
        # Local paths the queen's specs may name: those this hive was started with.
        self.start_paths = [Path(m.source).expanduser() for m in models if _is_path(m.source)]
        # Upstream servers the queen's specs may name (hives/agent/policy.py).
        self.upstreams = granted_upstreams(os.environ, models)
        self.downloads = Downloads(self._send)
        self.ws: Any = None
        self.connected = False
        self._seen: OrderedDict[str, None] = OrderedDict()  # recent job ids (dedup retries)
        self._job_worker: dict[str, WorkerProcess] = {}
        # Events not yet sent, per job, in order; one flush sends them all.
        self._outbox: dict[str, list[dict[str, Any]]] = {}
        self._flushing = False
        self.protocol = PROTOCOL_VERSION  # the session's, from the queen's welcome
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self.status = (
            StatusServer(self, status_host, status_port) if status_port is not None else None
        )

    # --- what the queen sees --------------------------------------------------------

    def describe_workers(self) -> list[dict[str, Any]]:
        return self.pool.describe()

    def hello(self) -> dict[str, Any]:
        return {
            "op": Op.HELLO,
            "protocol": PROTOCOL_VERSION,
            "name": self.name,
            "version": __version__,
            "region": self.region,
            "devices": detect_devices(),
            "workers": self.describe_workers(),
        }

    def heartbeat(self) -> dict[str, Any]:
        return {
            "op": Op.HEARTBEAT,
            "devices": detect_devices(),
            "workers": self.describe_workers(),
            "inflight": self.pool.inflight,
        }

    async def _send(self, msg: dict[str, Any]) -> None:
        """Send now if connected; otherwise (or if the socket just closed) drop it."""
        ws = self.ws
        if ws is not None and self.connected:
            try:
                await ws.send(dumps(msg))
            except ConnectionClosed:
                pass

    async def _worker_changed(self) -> None:
        await self._send(self.heartbeat())

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
        # The start models load while the hive connects: its hello reports them as
        # `starting`, and each worker's change of state (ready, refused, failed) is sent
        # at once (`_worker_changed`). The queen holds requests for them meanwhile.
        placing = asyncio.create_task(self.pool.start())
        idler = asyncio.create_task(self.pool.unload_idle_forever())
        code = 0
        try:
            code = await self._connect_loop()
        finally:
            for task in (placing, idler):
                task.cancel()
            await asyncio.gather(placing, idler, return_exceptions=True)
            await self.pool.stop()
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
            tls = verify_failure(reason, ca=self.ca) if isinstance(reason, BaseException) else ""
            if tls:
                logger.error(
                    "refusing the queen at %s: %s; retrying in %.1f s", self.url, tls, delay
                )
            elif _tls_required(reason):
                logger.error(
                    "the queen at %s serves TLS on this port: start the hive with --queen "
                    "https://...; retrying in %.1f s",
                    self.url,
                    delay,
                )
            else:
                logger.warning(
                    "queen at %s unreachable (%s); retrying in %.1f s", self.url, reason, delay
                )
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass
        return 0

    async def _session(self, backoff: Backoff) -> None:
        tls: dict[str, Any] = {}
        if self.ssl is not None:
            tls["ssl"] = self.ssl
            if self.server_name:
                tls["server_hostname"] = self.server_name
        async with websockets.connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            **tls,
            max_size=64 * 2**20,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=10,
        ) as ws:
            hello = self.hello()
            await ws.send(dumps(hello))
            first = loads(await asyncio.wait_for(ws.recv(), 15))
            if first.get("op") == Op.REFUSED:
                raise HiveRefused(str(first.get("reason")))
            if first.get("op") != Op.WELCOME:
                raise HiveRefused(f"unexpected first message {first.get('op')!r}")
            self.heartbeat_interval = float(
                first.get("heartbeat_interval") or self.heartbeat_interval
            )
            # A queen that does not say speaks version 1 (it refuses what it does not speak).
            spoken = first.get("protocol")
            self.protocol = spoken if isinstance(spoken, int) else 1
            self.ws = ws
            self.connected = True
            backoff.reset()
            logger.info(
                "connected to the queen at %s as %s (protocol %s)",
                self.url,
                self.name,
                self.protocol,
            )
            if _states(hello["workers"]) != _states(self.describe_workers()):
                # A worker changed (became ready, say) while the queen was answering:
                # that report was not sent, so send it now rather than at the next beat.
                await ws.send(dumps(self.heartbeat()))
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
            await ws.send(dumps(self.heartbeat()))

    # --- the queen's messages -----------------------------------------------------------

    async def _reader(self, ws: Any) -> None:
        async for raw in ws:
            try:
                msg = loads(raw)
            except (ValueError, json.JSONDecodeError):
                logger.warning("the queen sent a malformed frame; ignored")
                continue
            op = msg["op"]
            if op == Op.JOB:
                await self._on_job(ws, msg)
            elif op == Op.CANCEL:
                job_id = str(msg.get("id"))
                worker = self._job_worker.pop(job_id, None)
                if worker is not None:
                    logger.info("job %s cancelled by the queen", job_id)
                    await worker.cancel(job_id)
            elif op == Op.SPAWN:
                spec = self._spawn_spec(msg)
                if spec is not None:
                    self._background(self.pool.spawn(spec))
            elif op == Op.STOP:
                device = _device(msg)
                if device is not None:
                    await self.pool.stop_assigned(str(msg.get("model")), device)
            elif op == Op.WORKER:
                device = _device(msg)
                try:
                    action = WorkerAction(str(msg.get("action")))
                except ValueError:
                    logger.warning("the queen sent an unknown worker action; ignored")
                    continue
                if device is not None:
                    self._background(self.pool.order(action, str(msg.get("model")), device))
            elif op == Op.DOWNLOAD:
                self.downloads.start(int(msg.get("id") or 0), str(msg.get("source") or ""))
            elif op == Op.REFUSED:
                raise HiveRefused(str(msg.get("reason")))

    def _spawn_spec(self, msg: dict[str, Any]) -> ModelSpec | None:
        """The model the queen asks this hive to load (`rbee model add --hive`). A spec
        naming a local path outside the models directory and this hive's own start
        models is recorded as failed, with the reason (the queen shows it)."""
        try:
            spec = parse_model_arg(str(msg.get("spec")), device=str(msg.get("device") or CPU))
        except EngineError as exc:
            logger.error("cannot load %r as the queen asks: %s", msg.get("spec"), exc.message)
            return None
        spec = replace(spec, pinned=bool(msg.get("pinned")))
        if _queen_named_source(str(msg.get("spec"))):
            from hives.agent.catalog import models_dir

            problem = local_path_refusal(
                spec, roots=[models_dir(), *self.start_paths]
            ) or upstream_url_refusal(spec, granted=self.upstreams)
            if problem:
                logger.error("%s", problem)
                self._background(self.pool.fail(spec, problem))
                return None
        return spec

    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- job relay ----------------------------------------------------------------------

    async def _on_job(self, ws: Any, msg: dict[str, Any]) -> None:
        job_id = str(msg.get("id"))
        logger.debug("job %s for %s", job_id, msg.get("model"))
        if job_id in self._seen and job_id in self._job_worker:
            await ws.send(dumps({"op": Op.ACK, "id": job_id}))  # a resend; still running
            return
        # New, or seen but no longer running here (cancelled by a reconnect): run it.
        self._seen[job_id] = None
        while len(self._seen) > 10_000:
            self._seen.popitem(last=False)

        async def send_event(event: dict[str, Any]) -> None:
            """Queue the event; the events of every job that arrive before the relay would
            block go together (`_flush`)."""
            if event.get("kind") in FINAL_KINDS:
                self._job_worker.pop(job_id, None)
                logger.debug("job %s %s", job_id, event.get("kind"))
            queued = self._outbox.get(job_id)
            if queued is None:
                self._outbox[job_id] = [event]
            else:
                queued.append(event)
            if not self._flushing:
                self._flushing = True
                self._background(self._flush())

        worker = self.pool.worker_for(str(msg.get("model")), _device(msg, default=None))
        if worker is not None and worker.state in (
            WorkerState.UNLOADED,
            WorkerState.STARTING,
            WorkerState.STOPPING,
        ):
            # Loaded on demand: acknowledge now (the queen must not resend), then load in
            # a task of its own, so this reader goes on serving other jobs and cancels.
            await ws.send(dumps({"op": Op.ACK, "id": job_id}))
            self._job_worker[job_id] = worker
            self._background(self._load_then_submit(job_id, worker, msg, send_event))
            return
        if worker is None or worker.state != WorkerState.READY:
            what = "is not served" if worker is None else f"is {worker.state}"
            await send_event(
                error_event(
                    f"model {msg.get('model')!r} {what} on hive {self.name!r}",
                    code="model_unavailable",
                    status=503,
                )
            )
            return
        await ws.send(dumps({"op": Op.ACK, "id": job_id}))
        self._job_worker[job_id] = worker
        await self._submit(job_id, worker, msg, send_event)

    async def _load_then_submit(
        self, job_id: str, worker: WorkerProcess, msg: dict[str, Any], send_event: SendEvent
    ) -> None:
        reload = asyncio.ensure_future(self.pool.reload(worker))
        # Tell the queen the job is alive while the model loads (its idle timeout).
        while not reload.done():
            await asyncio.wait({reload}, timeout=LOADING_KEEPALIVE)
            if not reload.done() and job_id in self._job_worker:
                await send_event({"kind": EventKind.LOADING, "model": worker.spec.name})
        problem = reload.result()
        if job_id not in self._job_worker:
            return  # cancelled while loading
        if problem:
            self._job_worker.pop(job_id, None)
            await send_event(error_event(problem, code="model_unavailable", status=503))
            return
        await self._submit(job_id, worker, msg, send_event)

    async def _submit(
        self, job_id: str, worker: WorkerProcess, msg: dict[str, Any], send_event: SendEvent
    ) -> None:
        if not await worker.submit(
            job_id, str(msg.get("task")), dict(msg.get("request") or {}), send_event
        ):
            self._job_worker.pop(job_id, None)
            await send_event(
                error_event(
                    f"the worker for {worker.spec.name!r} is not accepting jobs",
                    code="worker_unavailable",
                    status=503,
                )
            )

    async def _flush(self) -> None:
        """Send the queued events. This task runs once the task that queued them (a
        worker's pipe reader, mostly) waits for more: everything that was ready by then
        goes, in one `batch` frame for all jobs (protocol 2), or a frame per job to a
        queen of version 1."""
        try:
            while self._outbox:
                outbox, self._outbox = self._outbox, {}
                ws = self.ws
                if ws is None or not self.connected:
                    continue  # no socket: the queen has failed these jobs
                if self.protocol >= BATCH_VERSION:
                    for frame in batch_frames(outbox.items()):
                        await ws.send(frame)
                else:
                    for job_id, events in outbox.items():
                        await ws.send(dumps({"op": Op.EVENTS, "id": job_id, "events": events}))
        except ConnectionClosed:
            self._outbox.clear()
        finally:
            self._flushing = False
