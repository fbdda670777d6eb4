"""The channel layers: the embedded default's in-memory one (messages arrive whole, without
the deep copy channels makes of each one, a full channel still refuses) and the Redis one
(a send is one script call; what arrives, in what order, is as channels_redis' own)."""

from __future__ import annotations

from typing import Any

import pytest
from channels.exceptions import ChannelFull

from kernel.channel_layer import InMemoryChannelLayer


async def test_a_message_arrives_with_its_nested_values_and_its_own_top_level() -> None:
    layer = InMemoryChannelLayer(capacity=10)
    events = [{"kind": "text", "text": "one"}, {"kind": "final", "usage": {"prompt_tokens": 2}}]
    sent = {"type": "job.events", "hive_id": 1, "events": events}
    await layer.send("reply", sent)
    sent["hive_id"] = 2  # the sender's dict is not the one delivered
    got = await layer.receive("reply")
    assert got == {"type": "job.events", "hive_id": 1, "events": events}
    assert got is not sent
    assert got["events"] is events  # shared, not deep-copied: nothing changes a sent message


async def test_group_members_each_get_their_own_top_level_dict() -> None:
    layer = InMemoryChannelLayer(capacity=10)
    await layer.group_add("fleet", "a")
    await layer.group_add("fleet", "b")
    await layer.group_send("fleet", {"type": "fleet.changed", "reason": "x"})
    a, b = await layer.receive("a"), await layer.receive("b")
    a.pop("type")
    assert b == {"type": "fleet.changed", "reason": "x"}


async def test_a_full_channel_refuses() -> None:
    layer = InMemoryChannelLayer(capacity=2)
    await layer.send("c", {"type": "m"})
    await layer.send("c", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("c", {"type": "m"})
    with pytest.raises(AssertionError):
        await layer.send("c", "not a dict")  # type: ignore[arg-type]


# --- the Redis layer: a send is one script call, and receives are channels_redis' own ----


def _redis_layer(capacity: int = 100) -> Any:
    import os
    import uuid

    from kernel.channel_layer import RedisChannelLayer

    url = os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0"
    return RedisChannelLayer(
        hosts=[{"address": url}], prefix=f"rbee-test-{uuid.uuid4().hex[:8]}", capacity=capacity
    )


async def test_redis_sends_arrive_in_order_on_plain_and_process_channels() -> None:
    layer = _redis_layer()
    mine = await layer.new_channel()
    events = [{"kind": "text", "text": "one"}, {"kind": "final", "usage": {"prompt_tokens": 2}}]
    for i in range(5):
        await layer.send("hive.7", {"type": "job.start", "n": i})
        await layer.send(mine, {"type": "job.events", "n": i, "events": events})
    assert [(await layer.receive("hive.7"))["n"] for _ in range(5)] == list(range(5))
    got = [await layer.receive(mine) for _ in range(5)]
    assert [m["n"] for m in got] == list(range(5))
    assert got[0] == {"type": "job.events", "n": 0, "events": events}  # no __asgi_channel__
    await layer.flush()


async def test_a_full_redis_channel_refuses_and_expired_messages_make_room() -> None:
    layer = _redis_layer(capacity=2)
    await layer.send("c", {"type": "m"})
    await layer.send("c", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("c", {"type": "m"})
    # Messages older than the expiry are dropped before the capacity is counted.
    connection = layer.connection(0)
    await connection.zadd(layer.prefix + "c", {b"old": 1.0}, xx=False)
    await connection.zremrangebyscore(layer.prefix + "c", 2.0, "+inf")  # only the old one left
    await layer.send("c", {"type": "m"})
    assert await connection.zcard(layer.prefix + "c") == 1
    assert (await layer.receive("c")) == {"type": "m"}
    await layer.flush()


async def test_a_redis_that_forgot_the_script_still_takes_sends() -> None:
    layer = _redis_layer()
    await layer.connection(0).script_flush()  # as after a restart
    await layer.send("c", {"type": "m", "x": 1})
    assert (await layer.receive("c")) == {"type": "m", "x": 1}
    await layer.flush()


async def test_a_busy_redis_channel_is_received_without_blocking_pops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = _redis_layer()
    for i in range(3):
        await layer.send("c", {"type": "m", "n": i})
    connection = layer.connection(0)

    async def never(*_: Any, **__: Any) -> None:
        raise AssertionError("a queued message must not need BZPOPMIN")

    monkeypatch.setattr(connection, "bzpopmin", never)
    assert [(await layer.receive("c"))["n"] for _ in range(3)] == [0, 1, 2]
    monkeypatch.undo()
    await layer.flush()


async def test_a_message_a_cancelled_receive_took_is_received_again() -> None:
    import asyncio

    layer = _redis_layer()
    await layer.send("c", {"type": "m", "n": 1})
    connection = layer.connection(0)
    key = layer.prefix + "c"
    # As a receive that was cancelled after taking it leaves it: in the backup queue.
    ((member, score),) = await connection.zpopmin(key)
    await connection.zadd(layer._backup_channel_name(key), {member: score})
    assert await asyncio.wait_for(layer.receive("c"), 5) == {"type": "m", "n": 1}
    await layer.flush()


async def test_an_empty_redis_channel_waits_for_the_next_message() -> None:
    import asyncio

    layer = _redis_layer()
    waiting = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await layer.send("c", {"type": "m", "n": 2})
    assert await asyncio.wait_for(waiting, 5) == {"type": "m", "n": 2}
    await layer.flush()
