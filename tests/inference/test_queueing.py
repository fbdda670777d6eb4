"""The per-model queue: capacity, priority, bounds, timeouts, cancellation."""

from __future__ import annotations

import asyncio

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
