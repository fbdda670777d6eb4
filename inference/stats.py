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

A value the database could refuse never stops the flushing: counts are clamped to
bigint and figures to finite numbers when recorded (and sums saturate), rows are written
in chunks of FLUSH_CHUNK (PostgreSQL takes at most 65,535 parameters per statement), a
chunk the database refuses is retried row by row so that one bad row holds up no other,
and a row refused MAX_ATTEMPTS times is dropped and logged. A database that cannot be
reached (OperationalError) keeps everything pending without counting attempts. The
pending sums are capped at MAX_PENDING keys: past it the oldest are dropped and counted
(`RollUp.dropped`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

logger = logging.getLogger("inference.stats")

BIGINT_MAX = 2**63 - 1  # RequestStat's integer columns are bigint
FLUSH_CHUNK = 500  # rows per upsert: 500 x 9 parameters, far below PostgreSQL's 65,535
MAX_ATTEMPTS = 3  # a row the database refused this many times is dropped (and logged)
MAX_JOB_TOKENS = 2**31 - 1  # output tokens one job may add
MAX_PENDING = 100_000  # (minute, model) keys held in memory at most; past it the oldest go


def _count(value: int) -> int:
    return min(max(0, int(value)), BIGINT_MAX)


def _figure(value: float) -> float:
    value = float(value)
    return max(0.0, value) if math.isfinite(value) else 0.0


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
        """Add `other` in place; counts saturate at bigint, figures stay finite."""
        for f in fields(self):
            total = getattr(self, f.name) + getattr(other, f.name)
            if isinstance(total, int):
                total = min(total, BIGINT_MAX)
            elif not math.isfinite(total):
                total = 0.0 if math.isnan(total) else float(getattr(self, f.name))
            setattr(self, f.name, total)


Key = tuple[datetime, str]  # (the minute's start in UTC, the model)


def minute_of(epoch: float) -> datetime:
    """The start of the UTC minute holding `epoch` (seconds)."""
    return datetime.fromtimestamp(int(epoch // 60 * 60), tz=UTC)


class RollUp:
    """One process's sums not yet in the database."""

    def __init__(self, *, max_pending: int = MAX_PENDING) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Key, Sums] = {}
        self._attempts: dict[Key, int] = {}  # failed writes of a key's row so far
        self.max_pending = max_pending
        self.dropped = 0  # keys dropped: over the cap, or refused MAX_ATTEMPTS times

    def _add(self, key: Key, sums: Sums) -> None:
        """Under the lock: add to a key's sums, dropping the oldest key when full."""
        held = self._pending.get(key)
        if held is not None:
            held.add(sums)
            return
        while len(self._pending) >= self.max_pending:
            oldest = min(self._pending)  # the earliest minute
            del self._pending[oldest]
            self._attempts.pop(oldest, None)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "request metrics: %d pending minutes dropped so far (over %d kept in "
                    "memory while they could not be written)",
                    self.dropped,
                    self.max_pending,
                )
        fresh = Sums()
        fresh.add(sums)
        self._pending[key] = fresh

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
        # One job's tokens are bounded far below bigint: a hive's absurd count must not
        # make the charts' SUM overflow (SQLite's integer SUM raises past 2**63).
        tokens = min(_count(output_tokens), MAX_JOB_TOKENS)
        one = Sums(
            requests=1,
            errors=0 if ok else 1,
            ttft_ms_sum=_figure(ttft_ms) if ttft_ms is not None else 0.0,
            ttft_count=1 if ttft_ms is not None else 0,
            output_tokens=tokens,
            generation_seconds=_figure(generation_seconds) if tokens > 0 else 0.0,
            queue_wait_ms_sum=_figure(queue_wait_ms),
        )
        key = (minute_of(time.time() if at is None else at), model[:200])
        with self._lock:
            self._add(key, one)

    def take(self) -> dict[Key, Sums]:
        """Everything pending, which is then no longer pending."""
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def give_back(self, taken: dict[Key, Sums]) -> None:
        """Sums whose flush failed: pending again, added to what came in meanwhile."""
        with self._lock:
            for key, sums in taken.items():
                self._add(key, sums)

    def pending(self) -> dict[Key, Sums]:
        with self._lock:
            return {k: Sums(**vars(v)) for k, v in self._pending.items()}

    def flush(self) -> int:
        """Add the pending sums to the database in chunks of FLUSH_CHUNK rows (one
        upsert-increment per row); the number of rows written. A chunk the database
        refuses is retried row by row; a row refused MAX_ATTEMPTS times is dropped and
        logged, the others stay pending. If the database cannot be reached, everything
        not written stays pending and the error is raised."""
        taken = self.take()
        if not taken:
            return 0
        keys = sorted(taken)
        handled: set[Key] = set()  # written, or pending again / dropped after a refusal
        written = 0
        try:
            for start in range(0, len(keys), FLUSH_CHUNK):
                chunk = {k: taken[k] for k in keys[start : start + FLUSH_CHUNK]}
                written += self._write(chunk, handled)
        except BaseException:  # unreachable database, interrupted: keep the rest
            self.give_back({k: v for k, v in taken.items() if k not in handled})
            raise
        return written

    def _write(self, chunk: dict[Key, Sums], handled: set[Key]) -> int:
        """Write one chunk (else each of its rows alone); how many rows were written.
        Raises only what means the database cannot be reached."""
        from django.db import DataError, IntegrityError

        from inference.services import request_stats_add

        try:
            request_stats_add(sums=chunk)
        except (DataError, IntegrityError, ValueError, OverflowError) as exc:
            # A row the database refuses for what it holds; anything else (unreachable,
            # read-only after a failover, a table missing mid-migration) is transient.
            if len(chunk) == 1:
                self._refused(chunk, exc)
                handled.update(chunk)
                return 0
            return sum(self._write({k: v}, handled) for k, v in chunk.items())
        handled.update(chunk)
        with self._lock:
            for key in chunk:
                self._attempts.pop(key, None)
        return len(chunk)

    def _refused(self, row: dict[Key, Sums], exc: Exception) -> None:
        """One row the database refused: pending again, or dropped after MAX_ATTEMPTS."""
        ((key, sums),) = row.items()
        with self._lock:
            attempts = self._attempts.get(key, 0) + 1
            if attempts < MAX_ATTEMPTS:
                self._attempts[key] = attempts
                self._add(key, sums)
                return
            self._attempts.pop(key, None)
            self.dropped += 1
        logger.error(
            "request metrics of %r at %s dropped: the database refused them %d times (%s)",
            key[1],
            key[0].isoformat(),
            attempts,
            exc,
        )


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
