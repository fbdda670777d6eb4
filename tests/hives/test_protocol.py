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


def test_dumpb_round_trips_what_orjson_cannot_write_through_the_standard_encoder() -> None:
    """A key that is a StrEnum member or an int beyond 64 bits still travels."""
    frame = {"op": "heartbeat", protocol.Op.EVENTS: 1, "big": 2**70, "nan": float("nan")}
    assert protocol.loads(protocol.dumpb(frame)) == {
        "op": "heartbeat",
        "events": 1,
        "big": 2**70,
        "nan": None,
    }


def test_a_batch_round_trips_and_its_malformed_entries_are_dropped() -> None:
    outbox = [("a", [{"kind": "delta", "text": "é\n"}]), ("b", [])]
    (frame,) = protocol.batch_frames(outbox)
    assert protocol.batch_jobs(protocol.loads(frame)) == outbox
    bad = {"op": "batch", "jobs": [["a"], [1, []], ["b", {}], "x", ["c", [{}], 3], ["d", [1]]]}
    assert protocol.batch_jobs(bad) == [("d", [1])]  # the events are the receiver's to check
    assert protocol.batch_jobs({"op": "batch", "jobs": {"a": []}}) == []


def test_pipe_lines_keep_the_partial_line_for_the_next_read() -> None:
    assert protocol.pipe_lines(b"a\nb\nc") == ([b"a", b"b"], b"c")
    assert protocol.pipe_lines(b"a\n") == ([b"a"], b"")
    assert protocol.pipe_lines(b"") == ([], b"")


@pytest.mark.parametrize(
    ("hello", "version"),
    [
        ({"protocol": protocol.PROTOCOL_VERSION}, protocol.PROTOCOL_VERSION),
        ({"protocol": 1}, protocol.OLDEST_COMPATIBLE),  # refused at hello (version_refusal)
        ({"protocol": protocol.PROTOCOL_VERSION + 5}, protocol.PROTOCOL_VERSION),
        ({"protocol": True}, protocol.OLDEST_COMPATIBLE),
        ({}, protocol.OLDEST_COMPATIBLE),
    ],
)
def test_the_session_speaks_the_hives_version_within_the_queens(
    hello: dict[str, object], version: int
) -> None:
    assert protocol.negotiated(hello) == version
