"""inference/pipeline.py relay(): the SSE chunks of events that arrived together (one batch
from the hive) go out in one write; an event that arrives alone is written at once."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from inference.chat import ChatFormat
from inference.pipeline import relay
from inference.textparts import ToolCalls

pytestmark = pytest.mark.asyncio


def texts(write: bytes) -> list[str]:
    out = []
    for part in write.split(b"\n\n"):
        if part.startswith(b"data: {"):
            choices = json.loads(part[6:])["choices"]
            out += [c["delta"].get("content", "") for c in choices if c.get("delta")]
    return out


async def test_events_of_one_batch_are_one_write_and_the_stream_is_unchanged() -> None:
    # Two batches from the hive: three deltas, then two deltas and the done.
    batches: list[list[dict[str, Any]]] = [
        [{"kind": "delta", "text": t} for t in ("a", "b", "c")],
        [{"kind": "delta", "text": "d"}, {"kind": "delta", "text": "e"}, {"kind": "done"}],
    ]
    left = 0

    async def events() -> AsyncGenerator[dict[str, Any], None]:
        nonlocal left
        for batch in batches:
            for i, event in enumerate(batch):
                left = len(batch) - i - 1
                yield event

    writes = [
        w
        async for w in relay(
            events(), ChatFormat("id", "m"), False, ToolCalls.for_request({}), lambda: left > 0
        )
    ]
    alone = [
        w async for w in relay(events(), ChatFormat("id", "m"), False, ToolCalls.for_request({}))
    ]
    assert len(writes) == 2  # one per batch, [DONE] with the last
    assert [t for w in writes for t in texts(w)] == ["", "a", "b", "c", "d", "e"]
    assert writes[-1].endswith(b"data: [DONE]\n\n")
    # Without `more`, a write per event, as before; the bytes are the same.
    assert len(alone) == 6
    strip = [json.loads(p[6:]) for w in writes for p in w.split(b"\n\n") if p[:7] == b"data: {"]
    same = [json.loads(p[6:]) for w in alone for p in w.split(b"\n\n") if p[:7] == b"data: {"]
    assert strip == same
