"""Runs one worker process per model and restarts it, with backoff, when it dies."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hives.agent.catalog import BUNDLED_PREFIX
from hives.agent.download import is_local
from hives.agent.workerenv import upstream_key_env, worker_env
from hives.protocol import FINAL_KINDS, PipeOp, WorkerState, dumpb, error_event, loads, pipe_lines
from hives.spec import REMOTE_ENGINES, ModelSpec

logger = logging.getLogger("hives.supervisor")

EventSink = Callable[[dict[str, Any]], Awaitable[None]]
_background: set[asyncio.Task[None]] = set()
# Bytes read from a worker's stdout at a time, and the longest line it may write (an
# image's or a speech's result travels as one line).
PIPE_READ = 2**20
MAX_LINE = 64 * 2**20


def files_are_here(spec: ModelSpec) -> bool:
    """Whether the worker needs nothing from the Hub: its model (and tokenizer, if named)
    is a local path or a bundled model. A repo id is fetched by the engine's library."""
    refs = [spec.source, str(spec.options.get("tokenizer") or "")]
    return all(not ref or ref.startswith(BUNDLED_PREFIX) or is_local(ref) for ref in refs)


class WorkerProcess:
    """One model on one device, in its own process.

    States: starting -> ready -> (died) failed -> starting ... ; stop() -> stopped.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        restart_backoff: float = 1.0,
        max_backoff: float = 30.0,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.spec = spec
        self.assigned = False  # started by the queen (`rbee model add`), not by our arguments
        self._state = WorkerState.STARTING
        self.on_change = on_change
        self.message = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.sinks: dict[str, EventSink] = {}
        self._restart_backoff = restart_backoff
        self._max_backoff = max_backoff
        self._backoff = restart_backoff
        self._stopping = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.memory_bytes = 0  # the engine's estimate, once known
        self.slots = 1
        self.last_used = time.monotonic()  # for idle unloading, least recently used first
        self._settled = asyncio.Event()
        self._settled.set()

    @property
    def state(self) -> WorkerState:
        return self._state

    @state.setter
    def state(self, value: WorkerState) -> None:
        if value != self._state:
            self._state = value
            if self.on_change is not None:
                # Tell the queen at once rather than at the next heartbeat.
                task: asyncio.Task[None] = asyncio.ensure_future(self.on_change())
                _background.add(task)
                task.add_done_callback(_background.discard)

    @property
    def inflight(self) -> int:
        return len(self.sinks)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.spec.name,
            "capability": self.spec.capability,
            "engine": self.spec.engine,
            "source": self.spec.source,
            "device": self.spec.device,
            "pinned": self.spec.pinned,
            "assigned": self.assigned,
            "state": self.state,
            "inflight": self.inflight,
            "pid": self.proc.pid if self.proc else None,
            "restarts": self.restarts,
            "message": self.message,
            "memory_bytes": self.memory_bytes,
            "slots": self.slots,
        }

    def start(self) -> None:
        self._stopping = False
        self._ready.clear()
        self.state = WorkerState.STARTING
        self._task = asyncio.create_task(self._run(), name=f"worker:{self.spec.name}")

    async def unload(self) -> None:
        """Stop the process but stay known: the next job for this model reloads it."""
        await self.stop(final_state=WorkerState.UNLOADED)

    async def settled(self) -> None:
        """Wait until no stop is under way."""
        await self._settled.wait()

    def refuse(self, message: str) -> None:
        """The device has no room for this model: stay known, with the reason."""
        self.message = message
        self.state = WorkerState.REFUSED

    def fail(self, message: str) -> None:
        """This hive will not load the model (its policy refuses it): failed, with the
        reason, and not restarted."""
        self.message = message
        self.state = WorkerState.FAILED

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _key_env(self) -> str:
        """The one credential this worker's engine may read (an upstream's key)."""
        if self.spec.engine not in REMOTE_ENGINES:
            return ""
        name = upstream_key_env(self.spec.options, os.environ, assigned=self.assigned)
        wanted = str(self.spec.options.get("api_key_env") or "")
        if wanted and not name:
            logger.warning(
                "%s names $%s for its upstream key; not given to it (a model the queen "
                "assigns gets only the variables listed in RBEE_HIVE_UPSTREAM_KEYS, and "
                "never RBEE_*)",
                self.spec.name,
                wanted,
            )
        return name

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hives.agent.worker",
            json.dumps(self.spec.to_dict()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the worker's logs go where the hive's go
            # An allow-list of the hive's environment: no token, no credentials.
            env=worker_env(
                os.environ,
                offline=files_are_here(self.spec),
                key_env=self._key_env(),
            ),
        )

    async def _run(self) -> None:
        while not self._stopping:
            self.state = WorkerState.STARTING
            try:
                self.proc = await self._spawn()
                assert self.proc.stdout is not None
                if self._stopping and self.proc.stdin is not None:
                    # stop() came while the process was being spawned and found none to
                    # wind down: tell this one to exit, or _read() waits for ever.
                    self.proc.stdin.close()
                ok = await self._read(self.proc.stdout)
            except Exception:  # cannot spawn, or the worker wrote something unreadable
                logger.exception("worker %s failed; restarting it", self.spec.name)
                ok = False
                if self.proc is not None and self.proc.returncode is None:
                    self.proc.kill()
            code = await self.proc.wait() if self.proc is not None else None
            self._ready.clear()
            await self._fail_inflight(
                f"the worker for {self.spec.name!r} stopped unexpectedly (exit code {code})"
            )
            if self._stopping:
                break
            self.state = WorkerState.FAILED
            self.restarts += 1
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self._max_backoff)
            if ok:
                self._backoff = self._restart_backoff  # it had been serving: retry soon
                delay = self._restart_backoff
            logger.warning(
                "worker %s exited with %s; restarting in %.1f s", self.spec.name, code, delay
            )
            await asyncio.sleep(delay)
        if self.state != WorkerState.STOPPING:  # stop() says where it ends (stopped, unloaded)
            self.state = WorkerState.STOPPED

    async def _read(self, stdout: asyncio.StreamReader) -> bool:
        """Handle the worker's lines until it closes its stdout: everything in the pipe at
        once (a stream of tokens arrives as many lines per read), each line in order."""
        was_ready = False
        rest = b""
        while True:
            data = await stdout.read(PIPE_READ)
            if not data:
                return was_ready
            lines, rest = pipe_lines(rest + data)
            if len(rest) > MAX_LINE:
                raise ValueError(f"worker {self.spec.name} wrote a line over {MAX_LINE} bytes")
            for line in lines:
                if not line:
                    continue
                try:
                    msg: dict[str, Any] | None = loads(line)
                except ValueError:
                    msg = None
                if msg is None:
                    logger.warning("worker %s wrote a malformed line", self.spec.name)
                    continue
                op = msg["op"]
                if op == PipeOp.EVENT:
                    await self._event(msg)
                elif op == PipeOp.READY:
                    was_ready = True
                    self._became_ready(msg)
                elif op == PipeOp.HEALTH:
                    self._health(str(msg.get("message") or ""), was_ready)
                elif op == PipeOp.FAILED:
                    self.message = str(msg.get("message") or "")
                    logger.error("worker %s failed to load: %s", self.spec.name, self.message)

    async def _event(self, msg: dict[str, Any]) -> None:
        job_id = str(msg.get("id"))
        event = msg.get("event")
        if not isinstance(event, dict):
            event = {}
        final = event.get("kind") in FINAL_KINDS
        sink = self.sinks.pop(job_id, None) if final else self.sinks.get(job_id)
        if final:
            self.last_used = time.monotonic()
        if sink is not None:
            try:
                await sink(event)
            except Exception:
                logger.exception("could not deliver an event of job %s", job_id)

    def _became_ready(self, msg: dict[str, Any]) -> None:
        self.memory_bytes = int(msg.get("memory_bytes") or self.memory_bytes)
        self.slots = max(1, int(msg.get("slots") or 1))
        self.last_used = time.monotonic()
        self.state = WorkerState.READY
        self.message = ""
        self._ready.set()
        logger.info(
            "worker %s ready (pid %s, loaded in %ss)",
            self.spec.name,
            msg.get("pid"),
            msg.get("load_seconds"),
        )

    def _health(self, problem: str, was_ready: bool) -> None:
        """The engine's backend stopped serving (ready -> failed, with the reason; the
        process stays, and no job is sent to it) or serves again (failed -> ready)."""
        if problem and self.state == WorkerState.READY:
            logger.warning("worker %s does not serve: %s", self.spec.name, problem)
            self.message = problem
            self._ready.clear()
            self.state = WorkerState.FAILED
        elif not problem and self.state == WorkerState.FAILED and was_ready:
            logger.info("worker %s serves again", self.spec.name)
            self.message = ""
            self._ready.set()
            self.state = WorkerState.READY

    async def _fail_inflight(self, message: str) -> None:
        sinks, self.sinks = self.sinks, {}
        for sink in sinks.values():
            try:
                await sink(error_event(message, code="worker_crashed", status=502))
            except Exception:
                logger.exception("could not report a crashed job")

    async def _write(self, msg: dict[str, Any]) -> bool:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return False
        try:
            proc.stdin.write(dumpb(msg) + b"\n")
            await proc.stdin.drain()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    async def submit(
        self, job_id: str, task: str, request: dict[str, Any], sink: EventSink
    ) -> bool:
        if self.state != WorkerState.READY:
            return False
        self.last_used = time.monotonic()
        self.sinks[job_id] = sink
        logger.debug("job %s submitted to %s", job_id, self.spec.name)
        if not await self._write(
            {"op": PipeOp.JOB, "id": job_id, "task": task, "request": request}
        ):
            self.sinks.pop(job_id, None)
            return False
        return True

    async def cancel(self, job_id: str) -> None:
        if self.sinks.pop(job_id, None) is not None:
            await self._write({"op": PipeOp.CANCEL, "id": job_id})

    async def stop(
        self, timeout: float = 10.0, *, final_state: WorkerState = WorkerState.STOPPED
    ) -> None:
        self._stopping = True
        self._settled.clear()
        self._ready.clear()
        # At once, before any await: no job may be submitted to a worker on its way out.
        self.state = WorkerState.STOPPING
        proc = self.proc
        if proc is not None and proc.returncode is None:
            for job_id, sink in list(self.sinks.items()):
                try:
                    await sink(
                        error_event(
                            f"the worker for {self.spec.name!r} was stopped",
                            code="worker_stopped",
                            status=503,
                        )
                    )
                except Exception:
                    logger.exception("could not report a stopped job")
                await self.cancel(job_id)
            if proc.stdin is not None:
                proc.stdin.close()  # the worker finishes its current job and exits
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                if self.proc is not None and self.proc.returncode is None:
                    self.proc.kill()
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        self.state = final_state
        self._settled.set()
