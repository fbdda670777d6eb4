"""Hypothesis on /v1 bodies at the validation layer: whatever arrives, the answer is a
valid request (that the job builders turn into a job) or a 4xx APIError in OpenAI's
format, never another exception (a 500). The HTTP-level run against a real queen is
tests/e2e/test_e2e_fuzz.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference import schemas
from inference.errors import APIError
from tests.fuzzing import bodies, raw_bodies

CASES = 400

_BUILD: dict[str, Callable[[dict[str, Any]], Any]] = {
    "chat": lambda d: schemas.chat_job_request(schemas.validate_chat(d)),
    "completions": lambda d: schemas.completion_job_request(schemas.validate_completion(d)),
    "embeddings": lambda d: schemas.embedding_inputs(schemas.validate_embedding(d)),
    "images": schemas.validate_image_generation,
    "speech": schemas.validate_speech,
}
RAN: dict[str, int] = {}


def _serve(kind: str, raw: bytes) -> bool:
    """True when the body was served; False when it was refused with a 4xx."""
    RAN[kind] = RAN.get(kind, 0) + 1
    try:
        job = _BUILD[kind](schemas.parse_json_body(raw))
    except APIError as err:
        assert 400 <= err.status < 500, (err.status, err.message)
        assert set(err.body()["error"]) >= {"message", "type", "param", "code"}
        assert err.message
        return False
    json.dumps(job, allow_nan=False, default=str)  # what goes to the hive is strict JSON
    return True


@pytest.mark.parametrize("kind", sorted(_BUILD))
@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_bodies_are_served_or_a_4xx(kind: str, data: st.DataObject) -> None:
    body = data.draw(bodies(kind))
    _serve(kind, json.dumps(body).encode())


@settings(max_examples=CASES, deadline=None)
@given(raw=raw_bodies(), kind=st.sampled_from(sorted(_BUILD)))
def test_malformed_bytes_are_a_4xx(raw: bytes, kind: str) -> None:
    _serve(kind, raw)  # most are refused; none may raise anything but a 4xx
