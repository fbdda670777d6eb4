"""The chat request schema on its own (the e2e tests cover it through HTTP too)."""

from __future__ import annotations

import pytest

from inference.errors import APIError
from inference.schemas import chat_job_request, parse_json_body, validate_chat

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_valid_request_becomes_a_job_request() -> None:
    req = validate_chat(
        {
            **BASE,
            "max_tokens": 9,
            "temperature": 0,
            "top_p": 1,
            "stop": "END",
            "seed": -5,
            "frequency_penalty": 0.5,
            "user": "u1",
            "some_vendor_extra": {"x": 1},
        }
    )
    job = chat_job_request(req)
    assert job == {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": ["END"],
        "seed": -5,
        "presence_penalty": None,
        "frequency_penalty": 0.5,
        "response_format": None,
    }


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    req = validate_chat({**BASE, "max_tokens": 50, "max_completion_tokens": 3})
    assert chat_job_request(req)["max_tokens"] == 3


def test_text_parts_are_joined() -> None:
    req = validate_chat(
        {
            **BASE,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
        }
    )
    assert chat_job_request(req)["messages"][0]["content"] == "ab"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
        ),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0].type",
        ),
        ({**BASE, "top_p": True}, "top_p"),
        ({**BASE, "stop": ["ok", 3]}, "stop"),
        ({**BASE, "seed": 2**64}, "seed"),
    ],
)
def test_errors_name_the_param(body: dict[str, object], param: str) -> None:
    with pytest.raises(APIError) as exc:
        validate_chat(body)
    assert exc.value.status == 400
    assert exc.value.param == param
    assert param in exc.value.message


def test_body_must_be_a_json_object() -> None:
    for raw in (b"nope", b"[]", b'"text"', b"\xff"):
        with pytest.raises(APIError) as exc:
            parse_json_body(raw)
        assert exc.value.status == 400
        assert exc.value.code == "invalid_json"


def test_a_union_field_reports_the_error_of_the_branch_that_applied() -> None:
    with pytest.raises(APIError) as exc:
        validate_chat({**BASE, "stop": ["a", "b", "c", "d", "e"]})
    assert exc.value.param == "stop"
    assert "at most 4" in exc.value.message


def test_response_formats_reach_the_engine() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    req = validate_chat(
        {
            **BASE,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        }
    )
    assert chat_job_request(req)["response_format"] == {"type": "json_schema", "schema": schema}
    req = validate_chat({**BASE, "response_format": {"type": "json_object"}})
    assert chat_job_request(req)["response_format"] == {"type": "json_object"}
    req = validate_chat({**BASE, "response_format": {"type": "text"}})
    assert chat_job_request(req)["response_format"] is None
