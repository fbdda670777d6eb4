"""Per-minute request metrics for the dashboard's charts (/ui/charts).

A job that ends (inference/dispatch.py) adds what it measured to this process's sums for
its (minute, model) in memory: one dict update under a lock, never a database write on the
request path. A thread of the queen (`start_flusher`, from `rbee queen start`) adds the
sums to `RequestStat` every RBEE_METRICS_FLUSH_SECONDS with one upsert-increment per row
(inference/services.py: request_stats_add), so any number of queens add up, and once an
hour deletes metrics older than RBEE_METRICS_RETENTION_DAYS (device samples too).

What is measured, per request that reached a worker:

* ttft_ms: from the request's arrival at the queen to the worker's first text (text
  tasks that streamed any), so it includes the queue wait and the dispatch;
* queue_wait_ms: the time spent waiting for a free slot in the model's queue;
* output_tokens and generation_seconds: the worker's completion tokens and the time from
  dispatch to its final event (tokens/s = output_tokens / generation_seconds; only
  requests that produced tokens add seconds);
* errors: jobs that did not end with `done` (worker errors, timeouts, clients that left).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

logger = logging.getLogger("inference.stats")


@dataclass
class Sums:
    """What one (minute, model) adds up to: RequestStat's columns."""

    requests: int = 0
    errors: int = 0
    ttft_ms_sum: float = 0.0
    ttft_count: int = 0
    output_tokens: int = 0
    generation_seconds: float = 0.0
    queue_wait_ms_sum: float = 0.0

    def add(self, other: Sums) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


Key = tuple[datetime, str]  # (the minute's start in UTC, the model)


def minute_of(epoch: float) -> datetime:
    """The start of the UTC minute holding `epoch` (seconds)."""
    return datetime.fromtimestamp(int(epoch // 60 * 60), tz=UTC)


class RollUp:
    """One process's sums not yet in the database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Key, Sums] = {}

    def record(
        self,
        *,
        model: str,
        ok: bool,
        ttft_ms: float | None = None,
        output_tokens: int = 0,
        generation_seconds: float = 0.0,
        queue_wait_ms: float = 0.0,
        at: float | None = None,
    ) -> None:
        """Count one request that ended at `at` (now by default)."""
        one = Sums(
            requests=1,
            errors=0 if ok else 1,
            ttft_ms_sum=max(0.0, ttft_ms) if ttft_ms is not None else 0.0,
            ttft_count=1 if ttft_ms is not None else 0,
            output_tokens=max(0, output_tokens),
            generation_seconds=max(0.0, generation_seconds) if output_tokens > 0 else 0.0,
            queue_wait_ms_sum=max(0.0, queue_wait_ms),
        )
        key = (minute_of(time.time() if at is None else at), model[:200])
        with self._lock:
            self._pending.setdefault(key, Sums()).add(one)

    def take(self) -> dict[Key, Sums]:
        """Everything pending, which is then no longer pending."""
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def give_back(self, taken: dict[Key, Sums]) -> None:
        """Sums whose flush failed: pending again, added to what came in meanwhile."""
        with self._lock:
            for key, sums in taken.items():
                self._pending.setdefault(key, Sums()).add(sums)

    def pending(self) -> dict[Key, Sums]:
        with self._lock:
            return {k: Sums(**vars(v)) for k, v in self._pending.items()}

    def flush(self) -> int:
        """Add the pending sums to the database (one upsert-increment per row); the
        number of rows. On failure nothing is lost: the sums stay pending."""
        from inference.services import request_stats_add

        taken = self.take()
        if not taken:
            return 0
        try:
            request_stats_add(sums=taken)
        except BaseException:
            self.give_back(taken)
            raise
        return len(taken)


rollup = RollUp()  # this process's


def record(
    *,
    model: str,
    ok: bool,
    ttft_ms: float | None = None,
    output_tokens: int = 0,
    generation_seconds: float = 0.0,
    queue_wait_ms: float = 0.0,
) -> None:
    """Count one finished request in this process's sums (memory only)."""
    rollup.record(
        model=model,
        ok=ok,
        ttft_ms=ttft_ms,
        output_tokens=output_tokens,
        generation_seconds=generation_seconds,
        queue_wait_ms=queue_wait_ms,
    )


def prune(now: datetime | None = None) -> tuple[int, int]:
    """Delete request sums and device samples older than RBEE_METRICS_RETENTION_DAYS:
    (request rows, device rows) deleted."""
    from django.conf import settings

    from hives.services import device_samples_prune
    from inference.services import request_stats_prune

    before = (now or datetime.now(UTC)) - timedelta(days=settings.RBEE_METRICS_RETENTION_DAYS)
    return request_stats_prune(before=before), device_samples_prune(before=before)


PRUNE_EVERY = 3600.0


def _flush_forever(stop: threading.Event, every: float) -> None:
    from django.db import close_old_connections

    next_prune = time.monotonic() + 60.0
    while True:
        stopping = stop.wait(every)
        try:
            rollup.flush()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY
                prune()
        except Exception as exc:
            logger.warning("flushing the request metrics failed (%s); trying again", exc)
        finally:
            close_old_connections()
        if stopping:
            return


def start_flusher() -> threading.Event:
    """Flush this queen's sums every RBEE_METRICS_FLUSH_SECONDS on a thread; set the
    returned event to flush once more and stop."""
    from django.conf import settings

    stop = threading.Event()
    every = max(0.2, float(settings.RBEE_METRICS_FLUSH_SECONDS))
    thread = threading.Thread(
        target=_flush_forever, args=(stop, every), name="metrics-flusher", daemon=True
    )
    thread.start()
    stop.thread = thread  # type: ignore[attr-defined]
    return stop


def stop_flusher(stop: threading.Event, timeout: float = 5.0) -> None:
    """Stop the flusher after one last flush (a stopping queen keeps its last sums)."""
    stop.set()
    thread = getattr(stop, "thread", None)
    if thread is not None:
        thread.join(timeout)
