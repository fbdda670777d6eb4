"""Hypothesis on /v1 bodies over HTTP, against a real queen and hive: mutated bodies of
every JSON endpoint (and malformed bytes) never get a 500 or a non-OpenAI error body, and
the queen still serves a plain request afterwards. The validation-level run with many
more cases is tests/inference/test_fuzz_bodies.py."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CHAT_MODEL, Stack
from tests.fuzzing import PATHS, bodies, raw_bodies

pytestmark = pytest.mark.e2e

CASES = 150
STATUS: Counter[int] = Counter()


def _tame(body: Any) -> Any:
    """Keep generation short: a fuzzed valid max_tokens of thousands would only be slow."""
    if isinstance(body, dict):
        for field in ("max_tokens", "max_completion_tokens"):
            v = body.get(field)
            # (a chat's null is "to the end of the context", as on OpenAI: long, not wrong)
            if (isinstance(v, int) and not isinstance(v, bool) and v > 3) or (
                v is None and field in body and "messages" in body
            ):
                body[field] = 3
        if isinstance(body.get("n"), int) and not isinstance(body["n"], bool) and body["n"] > 2:
            body["n"] = 2
    return body


def _check(resp: httpx.Response, what: str) -> None:
    STATUS[resp.status_code] += 1
    assert resp.status_code < 500 or resp.status_code == 503, (
        f"{resp.status_code} for {what}: {resp.text[:400]}"
    )
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert err["message"] and "type" in err and "code" in err, (what, err)


def test_mutated_bodies_over_http(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=stack.queen.url, headers=headers, timeout=120) as http:

        @settings(
            max_examples=CASES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data(), kind=st.sampled_from(sorted(PATHS)))
        def run(data: st.DataObject, kind: str) -> None:
            if data.draw(st.integers(0, 9)) == 0:
                raw = data.draw(raw_bodies())
            else:
                raw = json.dumps(_tame(data.draw(bodies(kind)))).encode()
            resp = http.post(PATHS[kind], content=raw)
            _check(resp, f"{PATHS[kind]} {raw[:300]!r}")

        run()
        ok = http.post(
            "/v1/chat/completions",
            json={
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 2,
            },
        )
        assert ok.status_code == 200, ok.text
    print(f"/v1 over HTTP: {sum(STATUS.values())} cases: {dict(STATUS)}")
    assert sum(STATUS.values()) >= CASES
    assert STATUS[200] > 0 and STATUS[400] > 0, STATUS
