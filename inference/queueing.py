"""Waiting for a free worker: one bounded queue per model, per queen process, shared fairly
between tenants.

A request may start when the model's eligible workers have a free slot
(RBEE_WORKER_SLOTS jobs each); otherwise it waits, for at most RBEE_QUEUE_TIMEOUT
seconds, in its tenant's own sub-queue. When a slot frees, interactive requests
go before batch ones; among tenants with a request of that priority waiting, the
slot goes by weighted fair share (stride scheduling: each grant moves the tenant
on by 1/weight, the plan's `queue_weight`; a tenant that starts waiting joins at
the current position, so idle time earns no credit), first come first served
within a tenant. A tenant with RBEE_QUEUE_MAX_PER_TENANT times its weight requests
waiting, or a queue with RBEE_QUEUE_MAX in all, answers 429 with Retry-After at
once: one tenant's flood is refused while others still find a place. Waiting
requests are not tied to a hive: when a slot frees they are routed among the
workers live at that moment, so the queue of a hive that disappeared drains to
the others. The queue length is the `queue_depth` given to `should_admit`.

A model whose only workers are still loading (`starting`: a hive that just connected
reports its start models so) has no capacity yet: its requests wait in the same queue,
in the same fair order, and one watcher per model and process re-reads the model's
workers every LOADING_POLL seconds (`loaded`, given by the pipeline). The first ready
worker gives the queue its capacity and wakes the waiters; no worker left that could
serve (refused for want of memory, failed to load, its hive gone) releases every
waiter at once with `Unservable` (the pipeline answers 503, with the hive's reason for
operators); past RBEE_QUEUE_TIMEOUT a waiter for a loading model hears 503 (still
loading), not 429.

Several queen replicas each keep their own queues (a request waits where it
arrived); workers still run one job at a time whichever replica sent it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from inference.errors import APIError

logger = logging.getLogger("inference.queueing")

_RANK = {"interactive": 0, "batch": 1}
# Seconds between two looks at a loading model's workers (one query per model and process).
LOADING_POLL = 0.25


class Unservable(Exception):
    """No worker is left that could serve the model the requests waited for: those that
    were loading were refused (no room), failed to load, or their hive went away.
    `problems` are the hives' reasons ("hive/device: message"), for operators' eyes."""

    def __init__(self, model: str, problems: list[str]) -> None:
        super().__init__(f"no worker can serve {model!r}")
        self.model = model
        self.problems = problems


# Gives the model's capacity now (0: its workers are still loading); raises Unservable
# when nothing will serve it.
Loaded = Callable[[], Awaitable[int]]


def capped_priority(requested: str, allowed: str) -> str:
    """The priority a request gets: what it asked for, but never above what its plan allows
    (a client may lower its priority, not raise it)."""
    return requested if _RANK.get(requested, 0) >= _RANK.get(allowed, 0) else allowed


@dataclass(order=True)
class _Waiter:
    rank: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


@dataclass
class _Share:
    """One tenant's sub-queue in a model's queue."""

    weight: int = 1
    waiting: list[_Waiter] = field(default_factory=list)  # a heap: (rank, seq)
    position: float = 0.0  # stride scheduling: where the tenant stands; lowest goes next
    running: int = 0  # its requests holding a slot (kept while any do)


@dataclass
class ModelQueue:
    running: int = 0
    capacity: int = 1
    shares: dict[str, _Share] = field(default_factory=dict)
    clock: float = 0.0  # the position of the last grant: where a newly waiting tenant joins
    size: int = 0  # requests waiting, all tenants
    loading: bool = False  # its workers are still loading: no capacity until one is ready
    watcher: asyncio.Task[None] | None = None  # watches a loading model's workers

    def _next(self) -> _Share | None:
        best: tuple[int, float, int] | None = None
        chosen = None
        for share in self.shares.values():
            if share.waiting:
                head = share.waiting[0]
                key = (head.rank, share.position, head.seq)
                if best is None or key < best:
                    best, chosen = key, share
        return chosen

    def _wake(self) -> None:
        while self.running < self.capacity:
            share = self._next()
            if share is None:
                return
            w = heapq.heappop(share.waiting)
            self.size -= 1
            if w.future.done():
                continue
            self._grant(share)  # the slot passes straight to the waiter
            w.future.set_result(None)
        self._forget_idle()

    def _share(self, tenant: str, weight: int) -> _Share:
        share = self.shares.get(tenant)
        if share is None:  # joins where the queue stands: time away earns no credit
            share = self.shares[tenant] = _Share(weight=weight, position=self.clock)
        share.weight = weight
        return share

    def _grant(self, share: _Share) -> None:
        self.clock = max(self.clock, share.position)
        share.position += 1 / share.weight
        share.running += 1
        self.running += 1

    def _forget_idle(self) -> None:
        for tenant in [t for t, sh in self.shares.items() if not sh.waiting and not sh.running]:
            del self.shares[tenant]

    def _fail_waiting(self, exc: BaseException) -> None:
        """Release every waiting request with `exc` (nothing will serve the model)."""
        for share in self.shares.values():
            for w in share.waiting:
                if not w.future.done():
                    w.future.set_exception(exc)
            share.waiting = []
        self.size = 0
        self._forget_idle()

    async def _watch(self, model: str, loaded: Loaded) -> None:
        """While requests wait for a loading model: look at its workers every
        LOADING_POLL seconds; a ready one gives the queue its capacity (and wakes the
        waiters), none left fails them (Unservable)."""
        try:
            while self.loading and self.size:
                await asyncio.sleep(LOADING_POLL)
                try:
                    capacity = await loaded()
                except Unservable as exc:
                    self.loading = False
                    self._fail_waiting(exc)
                    return
                except Exception:  # the database restarting, say: look again
                    logger.exception("could not read the workers of %s; trying again", model)
                    continue
                if capacity > 0:
                    self.loading = False
                    self.capacity = capacity
                    self._wake()
                    return
        finally:
            self.watcher = None

    def _remove(self, tenant: str, waiter: _Waiter) -> None:
        share = self.shares.get(tenant)
        if share is not None and waiter in share.waiting:
            share.waiting = [w for w in share.waiting if w is not waiter]
            heapq.heapify(share.waiting)
            self.size -= 1
        self._forget_idle()


_queues: dict[str, ModelQueue] = {}
_seq = itertools.count()


def queue_depth(model: str) -> int:
    q = _queues.get(model)
    return q.size if q else 0


def tenant_queue_depth(model: str, tenant: str) -> int:
    """How many of `tenant`'s requests wait for `model` (its share of queue_depth)."""
    q = _queues.get(model)
    share = q.shares.get(tenant) if q else None
    return len(share.waiting) if share else 0


def occupancy() -> dict[str, tuple[int, int]]:
    """Each model's queue in this process: (requests waiting, requests running)."""
    return {model: (q.size, q.running) for model, q in _queues.items()}


class Slot:
    """A started request's claim on its model's capacity; release() exactly once."""

    def __init__(self, model: str, tenant: str = "") -> None:
        self.model = model
        self.tenant = tenant
        self.waited = False
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        q = _queues[self.model]
        q.running = max(0, q.running - 1)
        share = q.shares.get(self.tenant)
        if share is not None:
            share.running = max(0, share.running - 1)
        q._wake()
        q._forget_idle()


async def acquire(
    model: str,
    *,
    capacity: int,
    priority: str,
    max_waiting: int,
    timeout: float,
    tenant: str = "",
    weight: int = 1,
    max_per_tenant: int = 0,
    loaded: Loaded | None = None,
) -> Slot:
    """A slot on `model`, waiting in `tenant`'s share of its queue if need be.
    `max_per_tenant` (0: no cap of its own) times `weight` bounds one tenant's waiting requests.
    `loaded` is given when the model's workers are all still loading: the request waits
    until it says one is ready (see Loaded; Unservable when none will be)."""
    q = _queues.setdefault(model, ModelQueue())
    if loaded is not None:
        q.loading = True
    elif capacity > 0:
        q.loading = False  # a caller found a worker up: the model has loaded
    q.capacity = 0 if q.loading else max(1, capacity)
    q._wake()  # the capacity may have grown (a worker came up): the waiting go first
    slot = Slot(model, tenant)
    rank = _RANK.get(priority, 0)
    weight = max(1, weight)
    ahead = any(sh.waiting and sh.waiting[0].rank <= rank for sh in q.shares.values())
    if q.running < q.capacity and not ahead:
        q._grant(q._share(tenant, weight))
        return slot
    existing = q.shares.get(tenant)
    mine = len(existing.waiting) if existing is not None else 0
    if max_per_tenant and mine >= max_per_tenant * weight:
        raise APIError(
            429,
            f"You already have {mine} requests waiting for '{model}' (your share of its "
            "queue); try again shortly.",
            code="queue_full",
            headers={"Retry-After": "2"},
        )
    if q.size >= max_waiting:
        raise APIError(
            429,
            f"The queue for '{model}' is full ({max_waiting} requests waiting); try again shortly.",
            code="queue_full",
            headers={"Retry-After": "2"},
        )
    share = q._share(tenant, weight)
    waiter = _Waiter(rank, next(_seq), asyncio.get_running_loop().create_future())
    heapq.heappush(share.waiting, waiter)
    q.size += 1
    slot.waited = True
    if q.loading and loaded is not None and q.watcher is None:
        q.watcher = asyncio.create_task(q._watch(model, loaded), name=f"loading:{model}")
    try:
        await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        if waiter.future.done() and not waiter.future.cancelled():
            if waiter.future.exception() is None:
                slot.release()  # granted just as we gave up: hand it on
        else:
            waiter.future.cancel()
            q._remove(tenant, waiter)
        if isinstance(exc, asyncio.CancelledError):
            raise
        if q.loading:
            raise APIError(
                503,
                f"The model '{model}' is still loading ({timeout:.0f} s waited); try again "
                "shortly.",
                code="model_loading",
                headers={"Retry-After": "5"},
            ) from exc
        raise APIError(
            429,
            f"Every worker for '{model}' stayed busy for {timeout:.0f} s; try again shortly.",
            code="queue_timeout",
            headers={"Retry-After": "5"},
        ) from exc
    return slot
