"""A worker process: holds one model in one engine and runs its jobs.

Started by the hive as ``python -m hives.agent.worker SPEC_JSON``. It speaks JSON
lines: jobs and cancels arrive on stdin; `ready`/`failed` and job events leave on
stdout (the real stdout is kept for the protocol; anything a library prints goes
to stderr). Events are written by a thread of their own (`Pipe`): a token is written
as soon as the engine lets go of the interpreter (llama.cpp does while it computes the
next one), and the tokens an engine makes faster than that go out in one write. Jobs run
in arrival order, as many at once as the engine has slots (one for most); a cancel
stops a running job between two tokens (or sentences, or diffusion steps) and drops a
queued one.

    starting --(load ok)--> ready --(stdin closed)--> exit 0
        \\--(load failed)--> failed, exit 3
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from typing import Any, BinaryIO

from hives.agent.catalog import materialize
from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.protocol import EventKind, PipeOp, dumpb, loads
from hives.spec import ModelSpec
from kernel.logs import configure as configure_logging

logger = logging.getLogger("hives.worker")


class Pipe:
    """The worker's end of the pipe to the hive: lines queued by any thread, written by
    one writer thread, all the lines waiting at that moment in one write (one wake-up of
    the hive's reader instead of one per token)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.lines: list[bytes] = []
        self.lock = threading.Lock()
        self.waiting = threading.Condition(self.lock)
        self.closed = False
        self.writer = threading.Thread(target=self._write, name="pipe-writer", daemon=True)
        self.writer.start()

    def put(self, line: bytes) -> None:
        with self.lock:
            self.lines.append(line)
            if len(self.lines) == 1:
                self.waiting.notify()

    def _write(self) -> None:
        while True:
            with self.lock:
                while not self.lines and not self.closed:
                    self.waiting.wait()
                lines, self.lines = self.lines, []
                if not lines and self.closed:
                    return
            try:
                self.out.write(b"".join(lines))
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):  # the hive went away
                return

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        with self.lock:
            self.closed = True
            self.waiting.notify()
        self.writer.join(timeout=10)


class Worker:
    def __init__(self, spec: ModelSpec, out: BinaryIO) -> None:
        self.spec = spec
        self.pipe = Pipe(out)
        self.jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.pending: set[str] = set()  # queued or running

    def emit(self, msg: dict[str, Any]) -> None:
        self.pipe.put(dumpb(msg) + b"\n")

    def read_stdin(self, stdin: BinaryIO) -> None:
        for line in stdin:
            try:
                msg = loads(line)
            except ValueError:
                logger.warning("worker got a malformed line; ignored")
                continue
            op = msg["op"]
            if op == PipeOp.JOB:
                self.pending.add(str(msg.get("id")))
                self.jobs.put(msg)
            elif op == PipeOp.CANCEL:
                job_id = str(msg.get("id"))
                if job_id in self.pending:  # a late cancel for a finished job is dropped
                    self.cancelled.add(job_id)
        self.jobs.put(None)  # the hive went away: finish

    def run(self) -> int:
        try:
            engine = get_engine(self.spec.engine)
            started = time.monotonic()
            self.spec = materialize(self.spec)  # bundled models are unpacked or built here
            engine.load(self.spec)
        except Exception as exc:
            message = (
                exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            )
            self.emit({"op": PipeOp.FAILED, "message": message})
            self.pipe.close()
            return 3
        # An engine with a backend of its own (an upstream server) says whether it
        # serves: before `ready`, so a worker whose upstream is down is never taken as
        # serving, and then every `health_interval` seconds.
        interval = float(getattr(engine, "health_interval", 0) or 0)
        problem = engine.health() if interval > 0 else ""
        self.emit(
            {
                "op": PipeOp.READY,
                "load_seconds": round(time.monotonic() - started, 3),
                "memory_bytes": engine.memory_estimate_bytes(self.spec),
                "slots": max(1, int(getattr(engine, "slots", 1) or 1)),
                "pid": os.getpid(),
            }
        )
        if problem:
            self.emit({"op": PipeOp.HEALTH, "message": problem})
        if interval > 0:
            threading.Thread(
                target=self.watch_health, args=(engine, interval, problem), daemon=True
            ).start()
        threading.Thread(target=self.read_stdin, args=(sys.stdin.buffer,), daemon=True).start()
        # Engines that batch (vLLM) or keep several contexts (llama.cpp slots) take
        # several jobs at once, each on its own thread; the rest take one at a time.
        # One slot runs on the main thread: some libraries run measurably slower on
        # another thread (sentence-transformers: ~21 ms vs 25-29 ms per call, here).
        slots = max(1, int(getattr(engine, "slots", 1) or 1))
        runners = [
            threading.Thread(target=self.serve, args=(engine,), daemon=True)
            for _ in range(slots - 1)
        ]
        for t in runners:
            t.start()
        self.serve(engine)
        for t in runners:
            t.join()
        self.pipe.close()
        engine.unload()
        return 0

    def watch_health(self, engine: Any, interval: float, last: str) -> None:
        """Tell the hive when the engine's backend stops or starts serving again."""
        while True:
            time.sleep(interval)
            try:
                problem = str(engine.health() or "")
            except Exception as exc:
                problem = f"the health check failed: {type(exc).__name__}: {exc}"
            if problem != last:
                self.emit({"op": PipeOp.HEALTH, "message": problem})
                last = problem

    def serve(self, engine: Any) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                self.jobs.put(None)  # let the other runners see the end too
                return
            self.run_job(engine, job)

    def run_job(self, engine: Any, job: dict[str, Any]) -> None:
        job_id = str(job.get("id"))
        if job_id in self.cancelled:
            self.cancelled.discard(job_id)
            self.pending.discard(job_id)
            return
        task = job.get("task")
        logger.debug("job %s started", job_id)
        started = time.monotonic()
        try:
            for event in engine.run(
                str(task), dict(job.get("request") or {}), lambda: job_id in self.cancelled
            ):
                self.emit({"op": PipeOp.EVENT, "id": job_id, "event": event})
        except EngineError as exc:
            self.emit(
                {
                    "op": PipeOp.EVENT,
                    "id": job_id,
                    "event": {
                        "kind": EventKind.ERROR,
                        "message": exc.message,
                        "code": exc.code,
                        "status": exc.status,
                        "param": exc.param,
                    },
                }
            )
        except Exception as exc:
            logger.exception("job %s failed", job_id)
            self.emit(
                {
                    "op": PipeOp.EVENT,
                    "id": job_id,
                    "event": {
                        "kind": EventKind.ERROR,
                        "message": f"the worker failed: {type(exc).__name__}: {exc}",
                        "code": "worker_error",
                        "status": 500,
                    },
                }
            )
        finally:
            self.pending.discard(job_id)
            self.cancelled.discard(job_id)
            logger.debug("job %s ended after %.3f s", job_id, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sys.setswitchinterval(0.0005)  # the stdin reader thread hands jobs over without a 5 ms wait
    configure_logging(os.environ.get("RBEE_LOG_LEVEL", "INFO"))  # to stderr
    spec = ModelSpec.from_dict(json.loads(args[0]))
    # Keep the real stdout for the protocol; send stray prints to stderr.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return Worker(spec, proto).run()


if __name__ == "__main__":
    sys.exit(main())
