"""hives/protocol.py: what a peer's frame may contain."""

from __future__ import annotations

import json

import pytest

from hives import protocol
from hives.protocol import loads


@pytest.mark.parametrize(
    "raw",
    [
        '{"op": "events", "id": "j", "events": [{"kind": "done", "usage": {"x": Infinity}}]}',
        '{"op": "heartbeat", "inflight": -Infinity}',
        '{"op": "heartbeat", "inflight": NaN}',
        # Not a constant, but a float literal json.loads would read as inf all the same.
        '{"op": "heartbeat", "inflight": 1e400}',
        '{"op": "heartbeat", "inflight": -1e999}',
    ],
)
def test_a_frame_with_a_non_finite_number_is_malformed(raw: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        loads(raw)
    with pytest.raises(ValueError):
        loads(raw.encode())


def test_finite_numbers_still_parse() -> None:
    msg = loads('{"op": "heartbeat", "inflight": 2, "load": 0.5, "big": 1e300, "neg": -3.25}')
    assert msg == {"op": "heartbeat", "inflight": 2, "load": 0.5, "big": 1e300, "neg": -3.25}


@pytest.mark.parametrize("raw", ["[]", '"op"', '{"op": 1}', "{}", "not json"])
def test_a_frame_is_an_object_with_an_op(raw: str) -> None:
    with pytest.raises(ValueError):
        loads(raw)
    assert issubclass(json.JSONDecodeError, ValueError)


def test_dumps_sends_non_finite_floats_as_null_so_the_frame_survives() -> None:
    """A transcript segment's log-probability can be -inf: the frame still travels, and
    the queen's loads accepts it."""
    frame = {
        "op": "events",
        "id": "j1",
        "events": [{"kind": "done", "result": {"segments": [{"avg_logprob": float("-inf")}]}}],
    }
    text = protocol.dumps(frame)
    assert protocol.loads(text)["events"][0]["result"]["segments"][0]["avg_logprob"] is None
    assert protocol.dumps({"op": "ack", "x": 1.5}) == '{"op":"ack","x":1.5}'
