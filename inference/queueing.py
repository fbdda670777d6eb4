"""Waiting for a free worker: one bounded queue per model, per queen process.

A request may start when the model's eligible workers have a free slot
(RBEE_WORKER_SLOTS jobs each); otherwise it waits, interactive requests always
ahead of batch ones and first come first served within a priority, for at most
RBEE_QUEUE_TIMEOUT seconds. A full queue (RBEE_QUEUE_MAX) answers 429 with
Retry-After at once. Waiting requests are not tied to a hive: when a slot frees
they are routed among the workers live at that moment, so the queue of a hive
that disappeared drains to the others. The queue length is the `queue_depth`
given to `should_admit`.

Several queen replicas each keep their own queues (a request waits where it
arrived); workers still run one job at a time whichever replica sent it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

from inference.errors import APIError

_RANK = {"interactive": 0, "batch": 1}


@dataclass(order=True)
class _Waiter:
    rank: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


@dataclass
class ModelQueue:
    running: int = 0
    capacity: int = 1
    waiting: list[_Waiter] = field(default_factory=list)

    def _wake(self) -> None:
        while self.waiting and self.running < self.capacity:
            w = heapq.heappop(self.waiting)
            if not w.future.done():
                self.running += 1  # the slot passes straight to the waiter
                w.future.set_result(None)


_queues: dict[str, ModelQueue] = {}
_seq = itertools.count()


def queue_depth(model: str) -> int:
    q = _queues.get(model)
    return len(q.waiting) if q else 0


def occupancy() -> dict[str, tuple[int, int]]:
    """Each model's queue in this process: (requests waiting, requests running)."""
    return {model: (len(q.waiting), q.running) for model, q in _queues.items()}


class Slot:
    """A started request's claim on its model's capacity; release() exactly once."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.waited = False
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        q = _queues[self.model]
        q.running = max(0, q.running - 1)
        q._wake()


async def acquire(
    model: str, *, capacity: int, priority: str, max_waiting: int, timeout: float
) -> Slot:
    q = _queues.setdefault(model, ModelQueue())
    q.capacity = max(1, capacity)
    slot = Slot(model)
    rank = _RANK.get(priority, 0)
    ahead = any(w.rank <= rank for w in q.waiting)
    if q.running < q.capacity and not ahead:
        q.running += 1
        return slot
    if len(q.waiting) >= max_waiting:
        raise APIError(
            429,
            f"The queue for '{model}' is full ({max_waiting} requests waiting); try again shortly.",
            code="queue_full",
            headers={"Retry-After": "2"},
        )
    waiter = _Waiter(rank, next(_seq), asyncio.get_running_loop().create_future())
    heapq.heappush(q.waiting, waiter)
    slot.waited = True
    try:
        await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        if waiter.future.done() and not waiter.future.cancelled():
            slot.release()  # granted just as we gave up: hand it on
        else:
            waiter.future.cancel()
            q.waiting = [w for w in q.waiting if w is not waiter]
            heapq.heapify(q.waiting)
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise APIError(
            429,
            f"Every worker for '{model}' stayed busy for {timeout:.0f} s; try again shortly.",
            code="queue_timeout",
            headers={"Retry-After": "5"},
        ) from exc
    return slot
