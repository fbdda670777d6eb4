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

Each request sees the model's workers through a `view`: those its region constraints
allow (the pipeline passes the constraints). A request whose view has only workers
still loading (`starting`: a hive that just connected reports its start models so)
waits in the same queue, held back until its view has a ready worker; it takes no
capacity from requests whose workers are ready and sets none. One watcher per view
in each model's queue (per process) re-reads that view's workers every LOADING_POLL
seconds (`loaded`, given by the pipeline). The view's first ready worker lets its
requests in, in the same fair order as every other waiting request (and never
lowers the queue's capacity); no worker left in the view that could serve (refused
for want of memory, failed to load, its hive gone) releases that view's waiters, and
only them, with `Unservable` (the pipeline answers 503, with the hive's reason for
operators). A request that finds a ready worker in its view lets the waiters of the
same view in too. Past RBEE_QUEUE_TIMEOUT a waiter still held back for its view's load
hears 503 (still loading), not 429.

Several queen replicas each keep their own queues (a request waits where it
arrived); workers still run one job at a time whichever replica sent it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from inference.errors import APIError

logger = logging.getLogger("inference.queueing")

_RANK = {"interactive": 0, "batch": 1}
# Seconds between two looks at a loading view's workers (one query per view of a model,
# per process).
LOADING_POLL = 0.25


class Unservable(Exception):
    """No worker is left that could serve the model the requests waited for: those that
    were loading were refused (no room), failed to load, or their hive went away.
    `problems` are the hives' reasons ("hive/device: message"), for operators' eyes."""

    def __init__(self, model: str, problems: list[str]) -> None:
        super().__init__(f"no worker can serve {model!r}")
        self.model = model
        self.problems = problems


# Gives the capacity of the model's workers in one view now (0: they are still loading);
# raises Unservable when nothing in that view will serve it.
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
    view: Hashable = field(default=(), compare=False)
    held: bool = field(default=False, compare=False)  # its view's workers still load


@dataclass
class _Share:
    """One tenant's sub-queue in a model's queue."""

    weight: int = 1
    waiting: list[_Waiter] = field(default_factory=list)  # a heap: (rank, seq)
    held: list[_Waiter] = field(default_factory=list)  # waiting for their view's load
    position: float = 0.0  # stride scheduling: where the tenant stands; lowest goes next
    running: int = 0  # its requests holding a slot (kept while any do)


@dataclass
class _View:
    """The requests of one view of a model (its region constraints) whose workers are
    all still loading, and the task that watches those workers for them."""

    loaded: Loaded
    watcher: asyncio.Task[None] | None = None


@dataclass
class ModelQueue:
    running: int = 0
    capacity: int = 1  # set by requests that found ready workers; loading ones leave it
    shares: dict[str, _Share] = field(default_factory=dict)
    clock: float = 0.0  # the position of the last grant: where a newly waiting tenant joins
    size: int = 0  # requests waiting, all tenants (held back for a load included)
    views: dict[Hashable, _View] = field(default_factory=dict)  # loading views, watched

    @property
    def loading(self) -> bool:
        """Whether some request waits for its view's workers to finish loading."""
        return any(share.held for share in self.shares.values())

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
        idle = [t for t, sh in self.shares.items() if not (sh.waiting or sh.held or sh.running)]
        for tenant in idle:
            del self.shares[tenant]

    def _holds(self, view: Hashable) -> bool:
        return any(w.view == view for share in self.shares.values() for w in share.held)

    def _ready(self, view: Hashable, capacity: int) -> None:
        """The view has a ready worker: its held requests join the others in the fair
        order (the queue's capacity is raised to the view's if that is more, never
        lowered: other views' requests may have more workers)."""
        self.capacity = max(self.capacity, capacity)
        for share in self.shares.values():
            if any(w.view == view for w in share.held):
                for w in share.held:
                    if w.view == view:
                        w.held = False
                        heapq.heappush(share.waiting, w)
                share.held = [w for w in share.held if w.view != view]
        self._wake()

    def _fail_view(self, view: Hashable, exc: BaseException) -> None:
        """Release the requests held for the view with `exc` (nothing in it will serve
        the model); other views' requests, and those already let in, wait on."""
        for share in self.shares.values():
            kept = []
            for w in share.held:
                if w.view != view:
                    kept.append(w)
                    continue
                self.size -= 1
                if not w.future.done():
                    w.future.set_exception(exc)
            share.held = kept
        self._forget_idle()

    async def _watch(self, model: str, view: Hashable, watched: _View) -> None:
        """While requests are held for the view's load: look at its workers every
        LOADING_POLL seconds; a ready one lets them in, none left fails them
        (Unservable). Only this view's requests: each view has its own watcher."""
        try:
            while self.views.get(view) is watched and self._holds(view):
                await asyncio.sleep(LOADING_POLL)
                if not self._holds(view):
                    return
                try:
                    capacity = await watched.loaded()
                except Unservable as exc:
                    self._fail_view(view, exc)
                    return
                except Exception:  # the database restarting, say: look again
                    logger.exception("could not read the workers of %s; trying again", model)
                    continue
                if capacity > 0:
                    self._ready(view, capacity)
                    return
        finally:
            if self.views.get(view) is watched:
                del self.views[view]

    def _remove(self, tenant: str, waiter: _Waiter) -> None:
        share = self.shares.get(tenant)
        if share is not None and waiter in share.held:
            share.held = [w for w in share.held if w is not waiter]
            self.size -= 1
        elif share is not None and waiter in share.waiting:
            share.waiting = [w for w in share.waiting if w is not waiter]
            heapq.heapify(share.waiting)
            self.size -= 1
        self._forget_idle()


_queues: dict[str, ModelQueue] = {}
# Taken to add a queue (a model's first request) and to copy the queues in occupancy(),
# which the metrics call from another thread: copying a dict that the loop grows can
# fail ('dictionary changed size'), even in one list() (a garbage collection inside it
# may switch threads).
_queues_lock = threading.Lock()
_seq = itertools.count()


def queue_depth(model: str) -> int:
    q = _queues.get(model)
    return q.size if q else 0


def tenant_queue_depth(model: str, tenant: str) -> int:
    """How many of `tenant`'s requests wait for `model` (its share of queue_depth)."""
    q = _queues.get(model)
    share = q.shares.get(tenant) if q else None
    return len(share.waiting) + len(share.held) if share else 0


def occupancy() -> dict[str, tuple[int, int]]:
    """Each model's queue in this process: (requests waiting, requests running). Safe
    from another thread (the metrics render in one) while the loop adds a queue."""
    with _queues_lock:
        queues = list(_queues.items())
    return {model: (q.size, q.running) for model, q in queues}


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
    view: Hashable = (),
) -> Slot:
    """A slot on `model`, waiting in `tenant`'s share of its queue if need be.
    `max_per_tenant` (0: no cap of its own) times `weight` bounds one tenant's waiting requests.
    `view` names the workers the request may use (its region constraints); `loaded` is
    given when those are all still loading: the request waits until it says one is ready
    (see Loaded; Unservable when none will be), and `capacity` is then not used."""
    q = _queues.get(model)
    if q is None:
        with _queues_lock:
            q = _queues[model] = ModelQueue(capacity=0 if loaded is not None else 1)
    if loaded is None:
        q.capacity = max(1, capacity)
        if capacity > 0 and view in q.views:
            q._ready(view, capacity)  # a worker in this view is up: its waiters go first
    q._wake()  # the capacity may have grown (a worker came up): the waiting go first
    slot = Slot(model, tenant)
    rank = _RANK.get(priority, 0)
    weight = max(1, weight)
    ahead = any(sh.waiting and sh.waiting[0].rank <= rank for sh in q.shares.values())
    if loaded is None and q.running < q.capacity and not ahead:
        q._grant(q._share(tenant, weight))
        return slot
    existing = q.shares.get(tenant)
    mine = len(existing.waiting) + len(existing.held) if existing is not None else 0
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
    future = asyncio.get_running_loop().create_future()
    waiter = _Waiter(rank, next(_seq), future, view=view, held=loaded is not None)
    if loaded is not None:
        share.held.append(waiter)
    else:
        heapq.heappush(share.waiting, waiter)
    q.size += 1
    slot.waited = True
    if loaded is not None and view not in q.views:
        watched = q.views[view] = _View(loaded)
        watched.watcher = asyncio.create_task(
            q._watch(model, view, watched), name=f"loading:{model}:{view}"
        )
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
        if waiter.held:
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
