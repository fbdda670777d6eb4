"""The embedded default's in-memory channel layer: messages arrive whole, without the deep
copy channels makes of each one, and a full channel still refuses."""

from __future__ import annotations

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
