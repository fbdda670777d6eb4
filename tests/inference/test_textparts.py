"""inference/textparts.py: the worker's tool-call pieces and log probabilities, checked
and put together as OpenAI sends them."""

from __future__ import annotations

from inference.textparts import ToolCalls, clean_logprobs, completion_logprobs


def test_pieces_become_openai_stream_pieces_and_whole_calls() -> None:
    calls = ToolCalls()
    head = {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert calls.feed([head]) == [head]
    assert calls.feed([{"index": 0, "function": {"arguments": '{"a": '}}]) == [
        {"index": 0, "function": {"arguments": '{"a": '}}
    ]
    # a second call, starting without an id: the queen names it
    second = calls.feed([{"index": 1, "function": {"name": "g", "arguments": "{}"}}])
    assert second[0]["id"].startswith("call_") and len(second[0]["id"]) == 29
    calls.feed([{"index": 0, "function": {"arguments": "1}"}}])
    whole = calls.calls()
    assert [c["function"] for c in whole] == [
        {"name": "f", "arguments": '{"a": 1}'},
        {"name": "g", "arguments": "{}"},
    ]
    assert whole[0]["id"] == "call_a" and whole[1]["id"] == second[0]["id"]


def test_malformed_pieces_are_dropped_not_passed_on() -> None:
    calls = ToolCalls()
    assert calls.feed("nope") == []
    assert calls.feed([1, None, {"index": "0"}, {"index": -1, "function": {"name": "f"}}]) == []
    assert calls.feed([{"index": 0, "function": {"arguments": "{}"}}]) == []  # no name
    assert calls.feed([{"index": 10**6, "function": {"name": "f"}}]) == []
    assert calls.feed([{"index": 0, "function": {"name": "f", "arguments": 5}}]) == []
    assert calls.calls() == []


def test_logprobs_are_checked_and_shaped() -> None:
    raw = [
        {
            "token": "Hi",
            "logprob": -0.5,
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.5},
                {"token": "Yo", "logprob": float("-inf")},
            ],
        },
        {"token": "x", "logprob": float("nan")},
        {"token": 3, "logprob": -1},
        "junk",
    ]
    assert clean_logprobs(raw) == [
        {
            "token": "Hi",
            "logprob": -0.5,
            "bytes": [72, 105],
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.5, "bytes": [72, 105]},
                {"token": "Yo", "logprob": -9999.0, "bytes": [89, 111]},
            ],
        }
    ]
    assert clean_logprobs(None) == []


def test_completion_shape_counts_offsets() -> None:
    entries = clean_logprobs(
        [
            {"token": "ab", "logprob": -1.0, "top_logprobs": [{"token": "ab", "logprob": -1.0}]},
            {"token": "c", "logprob": -2.0, "top_logprobs": []},
        ]
    )
    assert completion_logprobs(entries, 5) == {
        "tokens": ["ab", "c"],
        "token_logprobs": [-1.0, -2.0],
        "top_logprobs": [{"ab": -1.0}, {}],
        "text_offset": [5, 7],
    }
