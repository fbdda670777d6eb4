"""Hostile bodies are clear 400s naming the param, never 500s or hangs: huge numbers,
deep nesting, out-of-range sampling parameters."""

from __future__ import annotations

import time
from typing import Any

import pytest

from inference.errors import APIError
from inference.schemas import (
    MAX_JSON_DEPTH,
    MAX_OUTPUT_TOKENS,
    parse_json_body,
    validate_chat,
    validate_completion,
    validate_embedding,
    validate_image_variation,
)

CHAT = '{"model": "m", "messages": [{"role": "user", "content": "hi"}]'
BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _chat_raw(extra: str) -> APIError:
    with pytest.raises(APIError) as exc:
        validate_chat(parse_json_body((CHAT + extra + "}").encode()))
    assert exc.value.status == 400
    return exc.value


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", ["1e400", "99999999999999999999999999", "1.5", "0", "-1"])
def test_absurd_token_limits_are_400s_naming_the_param(param: str, value: str) -> None:
    err = _chat_raw(f', "{param}": {value}')
    assert err.param == param, err.message
    assert param in err.message


def test_token_limits_up_to_the_cap_are_fine() -> None:
    req = validate_chat({**BASE, "max_tokens": MAX_OUTPUT_TOKENS})
    assert req.max_tokens == MAX_OUTPUT_TOKENS
    with pytest.raises(APIError) as exc:
        validate_chat({**BASE, "max_completion_tokens": MAX_OUTPUT_TOKENS + 1})
    assert exc.value.param == "max_completion_tokens"


def test_completions_max_tokens_is_bounded() -> None:
    assert validate_completion({"model": "m", "prompt": "x", "max_tokens": 0}).max_tokens == 0
    with pytest.raises(APIError) as exc:
        validate_completion({"model": "m", "prompt": "x", "max_tokens": 10**26})
    assert exc.value.status == 400 and exc.value.param == "max_tokens"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (', "seed": 99999999999999999999999999', "seed"),
        (', "seed": -9223372036854775809', "seed"),
        (', "temperature": 1e400', "temperature"),
        (', "temperature": -1e400', "temperature"),
        (', "temperature": 2.01', "temperature"),
        (', "top_p": 1e400', "top_p"),
        (', "top_p": 1.5', "top_p"),
        (', "n": 99999999999999999999999999', "n"),
    ],
)
def test_out_of_range_parameters_name_the_param(extra: str, param: str) -> None:
    assert _chat_raw(extra).param == param


def test_int64_seeds_are_fine() -> None:
    assert validate_chat({**BASE, "seed": 2**63 - 1}).seed == 2**63 - 1
    assert validate_chat({**BASE, "seed": -(2**63)}).seed == -(2**63)


def test_nan_and_infinity_literals_are_not_json() -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        err = _chat_raw(f', "temperature": {literal}')
        assert err.code == "invalid_json"


def test_integers_with_thousands_of_digits_are_400s() -> None:
    err = _chat_raw(', "max_tokens": ' + "9" * 5000)
    assert err.code == "invalid_json"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 2_000, 10_000, 200_000])
def test_deeply_nested_bodies_are_400s(depth: int) -> None:
    raw = '{"model": "m", "messages": [{"role": "user", "content": ' + "[" * depth
    raw += "]" * depth + "}]}"
    started = time.monotonic()
    with pytest.raises(APIError) as exc:
        parse_json_body(raw.encode())
    assert exc.value.status == 400 and exc.value.code == "invalid_json"
    assert "nested" in exc.value.message
    assert time.monotonic() - started < 2


def test_deep_objects_are_refused_too() -> None:
    raw = '{"model": "m", "x": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}"
    with pytest.raises(APIError) as exc:
        parse_json_body(raw.encode())
    assert exc.value.code == "invalid_json"


def test_reasonable_nesting_is_fine() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(20):
        schema = {"type": "object", "properties": {"a": schema}}
    body = {
        **BASE,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    import json

    assert parse_json_body(json.dumps(body).encode()) == body


def test_embedding_dimensions_are_bounded() -> None:
    ok = {"model": "m", "input": "x"}
    assert validate_embedding({**ok, "dimensions": 65536}).dimensions == 65536
    for bad in (0, 65537, 10**30):
        with pytest.raises(APIError) as exc:
            validate_embedding({**ok, "dimensions": bad})
        assert exc.value.status == 400 and exc.value.param == "dimensions"


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", "9" * 30), ("seed", "9" * 5000), ("n", "1e400"), ("strength", "nan")],
)
def test_variation_form_numbers_are_bounded(field: str, value: str) -> None:
    with pytest.raises(APIError) as exc:
        validate_image_variation({field: value})
    assert exc.value.status == 400 and exc.value.param == field


def test_a_null_max_tokens_on_completions_is_openais_default_of_16() -> None:
    """Found by the HTTP fuzz run: `"max_tokens": null` reached the engine as None, which
    llama.cpp reads as "to the end of the context" (a request that ran for minutes)."""
    from inference.schemas import completion_job_request

    req = validate_completion({"model": "m", "prompt": "x", "max_tokens": None})
    assert completion_job_request(req)["max_tokens"] == 16
    assert (
        completion_job_request(validate_completion({"model": "m", "prompt": "x"}))["max_tokens"]
        == 16
    )
