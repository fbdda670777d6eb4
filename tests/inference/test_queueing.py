"""The per-model queue: capacity, priority, bounds, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from inference import queueing
from inference.errors import APIError

pytestmark = pytest.mark.asyncio


async def take(
    model: str,
    priority: str = "interactive",
    *,
    capacity: int = 1,
    max_waiting: int = 10,
    timeout: float = 5,
) -> queueing.Slot:
    return await queueing.acquire(
        model, capacity=capacity, priority=priority, max_waiting=max_waiting, timeout=timeout
    )


async def test_waits_for_a_free_slot_and_interactive_goes_first() -> None:
    first = await take("q1")
    order: list[str] = []

    async def wait(name: str, priority: str) -> None:
        slot = await take("q1", priority)
        order.append(name)
        await asyncio.sleep(0.01)
        slot.release()

    tasks = [
        asyncio.create_task(wait("batch-1", "batch")),
        asyncio.create_task(wait("inter-1", "interactive")),
        asyncio.create_task(wait("batch-2", "batch")),
        asyncio.create_task(wait("inter-2", "interactive")),
    ]
    await asyncio.sleep(0.05)
    assert queueing.queue_depth("q1") == 4
    first.release()
    await asyncio.gather(*tasks)
    assert order == ["inter-1", "inter-2", "batch-1", "batch-2"]
    assert queueing.queue_depth("q1") == 0
    assert queueing._queues["q1"].running == 0


async def test_capacity_counts_every_eligible_worker() -> None:
    slots = [await take("q2", capacity=3) for _ in range(3)]
    with pytest.raises(APIError) as exc:
        await take("q2", capacity=3, timeout=0.05)
    assert (exc.value.status, exc.value.code) == (429, "queue_timeout")
    assert exc.value.headers["Retry-After"]
    for s in slots:
        s.release()
    slots[0].release()  # twice is harmless
    assert queueing._queues["q2"].running == 0


async def test_a_full_queue_answers_429_at_once() -> None:
    held = await take("q3")
    waiting = [asyncio.create_task(take("q3", max_waiting=2)) for _ in range(2)]
    await asyncio.sleep(0.02)
    with pytest.raises(APIError) as exc:
        await take("q3", max_waiting=2)
    assert exc.value.code == "queue_full"
    held.release()
    for t in waiting:
        (await t).release()


async def test_a_client_that_leaves_while_waiting_gives_its_place_up() -> None:
    held = await take("q4")
    leaving = asyncio.create_task(take("q4"))
    staying = asyncio.create_task(take("q4"))
    await asyncio.sleep(0.02)
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    assert queueing.queue_depth("q4") == 1
    held.release()
    (await asyncio.wait_for(staying, 1)).release()
    assert queueing._queues["q4"].running == 0


# --- fair shares between tenants --------------------------------------------------------


async def serve(model: str, tenant: str, served: list[str], hold: float, **kw: object) -> None:
    """A request that, once it has its slot, holds the model's one worker for `hold` s."""
    slot = await queueing.acquire(
        model,
        capacity=1,
        priority=str(kw.pop("priority", "interactive")),
        max_waiting=int(kw.pop("max_waiting", 64)),  # type: ignore[call-overload]
        timeout=5,
        tenant=tenant,
        **kw,  # type: ignore[arg-type]
    )
    served.append(tenant)
    await asyncio.sleep(hold)
    slot.release()


async def test_one_tenants_flood_gets_429_while_another_tenant_is_served_promptly() -> None:
    served: list[str] = []
    flood = [
        asyncio.create_task(serve("fair1", "a", served, 0.02, max_per_tenant=8)) for _ in range(30)
    ]
    await asyncio.sleep(0.01)  # a holds the worker, 8 of its requests wait, 21 were refused
    refused = [t for t in flood if t.done()]
    assert len(refused) == 21
    for t in refused:
        exc = t.exception()
        assert isinstance(exc, APIError) and (exc.status, exc.code) == (429, "queue_full")
        assert exc.headers["Retry-After"]
    assert queueing.queue_depth("fair1") == 8
    assert queueing.tenant_queue_depth("fair1", "a") == 8
    assert queueing.tenant_queue_depth("fair1", "b") == 0
    started = time.perf_counter()
    await serve("fair1", "b", served, 0.0, max_per_tenant=8)
    waited = time.perf_counter() - started
    # b goes right after the request that holds the worker, ahead of a's 8 waiting ones
    assert served[:2] == ["a", "b"]
    assert waited < 0.02 * 4, waited
    await asyncio.gather(*flood, return_exceptions=True)
    assert served.count("a") == 9 and queueing._queues["fair1"].running == 0


async def test_a_full_queue_of_many_tenants_still_refuses_with_429() -> None:
    held = await queueing.acquire(
        "fair2", capacity=1, priority="interactive", max_waiting=3, timeout=5, tenant="x"
    )
    waiting = [
        asyncio.create_task(
            queueing.acquire(
                "fair2",
                capacity=1,
                priority="interactive",
                max_waiting=3,
                timeout=5,
                tenant=f"t{i}",
                max_per_tenant=2,
            )
        )
        for i in range(3)
    ]
    await asyncio.sleep(0.01)
    with pytest.raises(APIError) as exc:
        await queueing.acquire(
            "fair2",
            capacity=1,
            priority="interactive",
            max_waiting=3,
            timeout=5,
            tenant="t9",
            max_per_tenant=2,
        )
    assert exc.value.code == "queue_full"
    held.release()
    for t in waiting:
        (await t).release()


async def test_the_plan_weight_gives_a_tenant_a_bigger_share() -> None:
    held = await queueing.acquire(
        "fair3", capacity=1, priority="interactive", max_waiting=64, timeout=5, tenant="x"
    )
    served: list[str] = []
    light = [serve("fair3", "light", served, 0.0, weight=1) for _ in range(12)]
    heavy = [serve("fair3", "heavy", served, 0.0, weight=3) for _ in range(12)]
    tasks = [asyncio.create_task(c) for c in light + heavy]
    await asyncio.sleep(0.01)
    held.release()
    await asyncio.gather(*tasks)
    first = served[:8]
    assert first.count("heavy") == 6 and first.count("light") == 2, served
    assert sorted(served) == ["heavy"] * 12 + ["light"] * 12


async def test_interactive_still_goes_before_batch_across_tenants() -> None:
    held = await queueing.acquire(
        "fair4", capacity=1, priority="interactive", max_waiting=64, timeout=5, tenant="x"
    )
    served: list[str] = []
    tasks = [
        asyncio.create_task(serve("fair4", "batcher", served, 0.0, priority="batch"))
        for _ in range(3)
    ]
    await asyncio.sleep(0.005)
    tasks.append(asyncio.create_task(serve("fair4", "chat", served, 0.0)))
    await asyncio.sleep(0.005)
    held.release()
    await asyncio.gather(*tasks)
    assert served == ["chat", "batcher", "batcher", "batcher"]


def test_a_client_may_lower_its_priority_but_not_raise_it_above_the_plan() -> None:
    assert queueing.capped_priority("interactive", "interactive") == "interactive"
    assert queueing.capped_priority("batch", "interactive") == "batch"
    assert queueing.capped_priority("interactive", "batch") == "batch"
    assert queueing.capped_priority("batch", "batch") == "batch"


@pytest.mark.django_db
def test_the_callers_plan_carries_its_queue_weight_and_highest_priority() -> None:
    from tenants.models import Plan
    from tenants.selectors import caller_from_key
    from tenants.services import api_key_create, tenant_create

    Plan.objects.create(name="bulk", queue_weight=3, max_priority="batch")
    _, plaintext = api_key_create(tenant=tenant_create(name="bulk-co", plan="bulk"))
    caller = caller_from_key(plaintext)
    assert (caller.queue_weight, caller.max_priority) == (3, "batch")
    _, free_key = api_key_create(tenant=tenant_create(name="homelab"))
    assert (caller_from_key(free_key).queue_weight, caller_from_key(free_key).max_priority) == (
        1,
        "interactive",
    )


@pytest.mark.django_db
def test_operators_set_a_plans_queue_weight_and_highest_priority() -> None:
    from tenants.errors import TenantError
    from tenants.services import plan_set

    plan, _ = plan_set(name="batchy", limits={}, queue_weight=4, max_priority="batch")
    plan.refresh_from_db()
    assert (plan.queue_weight, plan.max_priority) == (4, "batch")
    with pytest.raises(TenantError):
        plan_set(name="batchy", limits={}, queue_weight=0)
    with pytest.raises(TenantError):
        plan_set(name="batchy", limits={}, max_priority="urgent")


# --- a model that is still loading ---------------------------------------------------------


class Workers:
    """What the queue of a loading model reads each time it looks (queueing.Loaded): the
    capacity now, or Unservable; counts the looks."""

    def __init__(self) -> None:
        self.capacity = 0
        self.problems: list[str] | None = None
        self.looks = 0

    async def __call__(self) -> int:
        self.looks += 1
        if self.problems is not None:
            raise queueing.Unservable("m", self.problems)
        return self.capacity


async def wait_loading(
    model: str, workers: Workers, tenant: str, served: list[str], *, timeout: float = 5
) -> None:
    slot = await queueing.acquire(
        model,
        capacity=0,
        priority="interactive",
        max_waiting=64,
        timeout=timeout,
        tenant=tenant,
        loaded=workers,
    )
    served.append(tenant)
    await asyncio.sleep(0.01)
    slot.release()


async def test_requests_for_a_loading_model_wait_until_a_worker_is_ready_in_fair_order() -> None:
    workers = Workers()
    served: list[str] = []
    tasks = [
        asyncio.create_task(wait_loading("l1", workers, tenant, served))
        for tenant in ("a", "a", "a", "b")
    ]
    await asyncio.sleep(3 * queueing.LOADING_POLL)
    assert served == []  # no capacity while it loads
    assert queueing.queue_depth("l1") == 4
    assert workers.looks >= 2  # one watcher, looking again and again
    workers.capacity = 1
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert served == ["a", "b", "a", "a"]  # the fair shares, as for any wait
    assert queueing.queue_depth("l1") == 0
    assert queueing._queues["l1"].running == 0
    assert queueing._queues["l1"].views == {}  # its watcher is gone


async def test_one_watcher_per_loading_model() -> None:
    workers = Workers()
    tasks = [asyncio.create_task(wait_loading("l2", workers, "a", [])) for _ in range(5)]
    await asyncio.sleep(4.5 * queueing.LOADING_POLL)
    assert 3 <= workers.looks <= 5  # every LOADING_POLL s, however many wait
    workers.capacity = 2
    await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def test_no_worker_left_releases_every_waiter_at_once() -> None:
    workers = Workers()
    tasks = [
        asyncio.create_task(wait_loading("l3", workers, tenant, [], timeout=30))
        for tenant in ("a", "b")
    ]
    await asyncio.sleep(0.05)
    assert queueing.queue_depth("l3") == 2
    workers.problems = ["h1/cuda:0 refused: cannot place m on cuda:0"]
    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert time.monotonic() - started < 2 * queueing.LOADING_POLL + 0.5
    for result in results:
        assert isinstance(result, queueing.Unservable)
        assert (result.model, result.problems) == ("m", workers.problems)
    assert queueing.queue_depth("l3") == 0
    assert queueing._queues["l3"].running == 0


async def test_a_model_still_loading_at_the_timeout_is_a_503_not_a_429() -> None:
    with pytest.raises(APIError) as exc:
        await wait_loading("l4", Workers(), "a", [], timeout=0.3)
    assert (exc.value.status, exc.value.code) == (503, "model_loading")
    assert exc.value.headers["Retry-After"] == "5"
    assert queueing.queue_depth("l4") == 0


async def test_a_request_that_finds_a_worker_up_wakes_those_waiting_for_the_load() -> None:
    workers = Workers()  # never says ready: another request finds the worker up first
    served: list[str] = []
    waiting = asyncio.create_task(wait_loading("l5", workers, "early", served))
    await asyncio.sleep(0.05)
    slot = await asyncio.wait_for(take("l5", capacity=2), 2)
    await asyncio.wait_for(waiting, 2)
    assert served == ["early"]  # it waited first, so it went first
    slot.release()
    assert queueing._queues["l5"].loading is False


# --- loading in one region's view of the model -------------------------------------------
# The pipeline gives each request the view of the model's workers that its region
# constraints allow (`view`, with `loaded` reading that view). A view whose workers are
# all still loading holds back its own requests only: others, whose workers are ready,
# keep the model's capacity, and a view found unservable fails only its own requests.


async def test_a_loading_region_neither_stalls_nor_fails_other_tenants() -> None:
    model = "rv-shared"
    # Tenant A holds the only slot of a healthy, ready worker (no region constraint).
    a = await queueing.acquire(
        model, capacity=1, priority="interactive", max_waiting=10, timeout=5, tenant="A"
    )
    # Tenant B (no region) waits for A's slot: its worker is ready, it just has to queue.
    b = asyncio.create_task(
        queueing.acquire(
            model, capacity=1, priority="interactive", max_waiting=10, timeout=5, tenant="B"
        )
    )
    await asyncio.sleep(0.05)
    eu = Workers()  # tenant C's region only has a worker that will be refused

    c = asyncio.create_task(
        queueing.acquire(
            model,
            capacity=0,
            priority="interactive",
            max_waiting=10,
            timeout=5,
            tenant="C",
            loaded=eu,
        )
    )
    await asyncio.sleep(0.05)
    # C waiting for its region's load leaves the capacity that ready callers set alone
    assert queueing._queues[model].capacity == 1
    assert queueing.queue_depth(model) == 2
    a.release()  # A is done: B gets the slot at once
    await asyncio.sleep(0.01)
    assert b.done() and b.exception() is None
    assert not c.done()  # C still waits for its region's worker
    eu.problems = ["eu-hive/cuda:0: no room"]
    await asyncio.wait_for(asyncio.wait({c}), 2)
    error = c.exception()
    assert isinstance(error, queueing.Unservable) and error.problems == eu.problems
    b.result().release()
    assert queueing.queue_depth(model) == 0
    assert queueing._queues[model].running == 0
    assert queueing._queues[model].views == {}


async def test_the_unservable_view_was_the_first_waiter_and_others_still_are_served() -> None:
    """The watcher of a loading view reads that view, whoever waited first: a tenant whose
    region was refused before a tenant loading elsewhere fails alone."""
    model = "rv-first"
    eu, us = Workers(), Workers()
    served: list[str] = []

    async def wait_in(view: str, workers: Workers, tenant: str) -> None:
        slot = await queueing.acquire(
            model,
            capacity=0,
            priority="interactive",
            max_waiting=10,
            timeout=5,
            tenant=tenant,
            loaded=workers,
            view=(view,),
        )
        served.append(tenant)
        await asyncio.sleep(0.01)
        slot.release()

    first = asyncio.create_task(wait_in("eu", eu, "eu-tenant"))
    await asyncio.sleep(0.01)
    second = [asyncio.create_task(wait_in("us", us, f"us-{i}")) for i in range(2)]
    await asyncio.sleep(3 * queueing.LOADING_POLL)
    assert served == [] and queueing.queue_depth(model) == 3
    assert eu.looks >= 2 and us.looks >= 2  # one watcher per view, each reading its own
    eu.problems = ["eu-hive/cuda:0 refused: no room"]
    us.capacity = 1
    results = await asyncio.wait_for(asyncio.gather(first, *second, return_exceptions=True), 5)
    assert isinstance(results[0], queueing.Unservable)
    assert results[1:] == [None, None]
    assert sorted(served) == ["us-0", "us-1"]
    assert queueing.queue_depth(model) == 0 and queueing._queues[model].running == 0


async def test_a_ready_caller_releases_only_the_waiters_of_its_own_view() -> None:
    model = "rv-ready"
    eu = Workers()  # the region's worker never finishes loading
    served: list[str] = []
    waiting = asyncio.create_task(
        queueing.acquire(
            model,
            capacity=0,
            priority="interactive",
            max_waiting=10,
            timeout=0.6,
            tenant="eu-tenant",
            loaded=eu,
            view=("eu",),
        )
    )
    await asyncio.sleep(0.05)
    # A caller elsewhere finds a worker up: it is served at once, ahead of the EU waiter,
    # and does not tell the EU waiter that its region's worker is ready.
    slot = await asyncio.wait_for(
        queueing.acquire(
            model, capacity=2, priority="interactive", max_waiting=10, timeout=5, tenant="g"
        ),
        1,
    )
    served.append("g")
    slot.release()
    with pytest.raises(APIError) as exc:
        await waiting
    assert (exc.value.status, exc.value.code) == (503, "model_loading")
    assert served == ["g"]
    assert queueing.queue_depth(model) == 0 and queueing._queues[model].running == 0
