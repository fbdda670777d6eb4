"""Bad input on /v1/, each with OpenAI's error body and the right status; nothing crashes."""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import httpx
import openai
import pytest

from testkit.live import Hive, bundled_gguf, stop_process
from tests.conftest import CHAT_MODEL, Stack
from tests.openai_shapes import assert_openai_shape

pytestmark = pytest.mark.e2e

OK_BODY = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def post(
    stack: Stack,
    body: Any,
    *,
    key: str | None = "stack",
    raw: bytes | None = None,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    if key == "stack":
        h["Authorization"] = f"Bearer {stack.api_key}"
    elif key is not None:
        h["Authorization"] = key
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{stack.queen.url}{path}", content=content, headers=h, timeout=60)


def assert_error(
    resp: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert_openai_shape("ErrorResponse", body)
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


# --- authentication ---------------------------------------------------------------------


def test_no_key_is_401(stack: Stack) -> None:
    err = assert_error(post(stack, OK_BODY, key=None), 401, code="invalid_api_key")
    assert "API key" in err["message"]


def test_malformed_key_is_401(stack: Stack) -> None:
    assert_error(post(stack, OK_BODY, key="Bearer hello"), 401, code="invalid_api_key")
    assert_error(post(stack, OK_BODY, key=f"Basic {stack.api_key}"), 401, code="invalid_api_key")


def test_unknown_key_is_401(stack: Stack) -> None:
    forged = re.sub(r"-[^-]+$", "-" + "A" * 40, stack.api_key)  # right prefix, wrong secret
    assert_error(post(stack, OK_BODY, key=f"Bearer {forged}"), 401, code="invalid_api_key")
    other = "sk-rbee-abcdefghij-" + "B" * 40
    assert_error(post(stack, OK_BODY, key=f"Bearer {other}"), 401, code="invalid_api_key")


def test_revoked_key_is_401_at_once(stack: Stack) -> None:
    key = stack.dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
    assert post(stack, OK_BODY, key=f"Bearer {key}").status_code == 200
    stack.dep.rbee("key", "revoke", key, "--tenant", "acme")
    err = assert_error(post(stack, OK_BODY, key=f"Bearer {key}"), 401, code="invalid_api_key")
    assert "revoked" in err["message"]
    assert post(stack, OK_BODY).status_code == 200  # other keys unaffected


def test_models_endpoint_needs_a_key(stack: Stack) -> None:
    resp = httpx.get(f"{stack.queen.url}/v1/models")
    assert_error(resp, 401, code="invalid_api_key")


# --- malformed bodies ----------------------------------------------------------------------


def test_malformed_json_is_400(stack: Stack) -> None:
    assert_error(post(stack, None, raw=b'{"model": "x", '), 400, code="invalid_json")
    assert_error(post(stack, None, raw=b"\xff\xfe"), 400, code="invalid_json")
    assert_error(post(stack, None, raw=b"[1, 2]"), 400, code="invalid_json")
    assert_error(post(stack, None, raw=b""), 400, code="invalid_json")


FORM = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--b--\r\n'


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        (None, json.dumps(OK_BODY).encode()),
        ("text/plain", json.dumps(OK_BODY).encode()),
        ("application/x-www-form-urlencoded", b"model=m&messages=x"),
        # (A malformed multipart body never reaches the app: Daphne answers 400 itself.)
        ("multipart/form-data; boundary=b", FORM),
    ],
)
def test_a_json_endpoint_takes_only_json_bodies(
    stack: Stack, content_type: str | None, content: bytes
) -> None:
    # text/plain and forms are what a web page can send cross-site without asking.
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    if content_type:
        headers["Content-Type"] = content_type
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/audio/speech"):
        resp = httpx.post(f"{stack.queen.url}{path}", content=content, headers=headers, timeout=60)
        err = assert_error(resp, 415, code="unsupported_media_type")
        assert err["type"] == "invalid_request_error"
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert post(stack, OK_BODY, headers=charset).status_code == 200


@pytest.mark.parametrize(
    ("tail", "param"),
    [
        (b', "max_tokens": 1e400}', "max_tokens"),
        (b', "max_tokens": 99999999999999999999999999}', "max_tokens"),
        (b', "max_completion_tokens": 99999999999999999999999999}', "max_completion_tokens"),
        (b', "seed": 99999999999999999999999999}', "seed"),
        (b', "temperature": 1e400}', "temperature"),
        (b', "max_tokens": ' + b"9" * 5000 + b"}", None),
        (b', "temperature": NaN}', None),
    ],
)
def test_absurd_numbers_are_400(stack: Stack, tail: bytes, param: str | None) -> None:
    raw = json.dumps({k: v for k, v in OK_BODY.items() if k != "max_tokens"})[:-1].encode()
    err = assert_error(post(stack, None, raw=raw + tail), 400, param=param)
    if param is None:
        assert err["code"] == "invalid_json"


def test_deeply_nested_json_is_400(stack: Stack) -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    raw = b'{"model": "' + CHAT_MODEL.encode() + b'", "messages": [{"role": "user", "content": '
    assert_error(post(stack, None, raw=raw + deep + b"}]}"), 400, code="invalid_json")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": None}, "model"),
        ({"model": 7}, "model"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"seed": "x"}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"presence_penalty": 9}, "presence_penalty"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"n": 0}, "n"),
    ],
)
def test_invalid_parameters_are_400_naming_the_param(
    stack: Stack, change: dict[str, Any], param: str
) -> None:
    body = {**OK_BODY, **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(post(stack, body), 400, param=param)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
    ],
)
def test_parameters_we_cannot_honour_are_refused_clearly(
    stack: Stack, change: dict[str, Any], param: str
) -> None:
    err = assert_error(post(stack, {**OK_BODY, **change}), 400, param=param)
    assert "not" in err["message"] or "only" in err["message"]


def test_unknown_model_is_404(stack: Stack) -> None:
    assert_error(
        post(stack, {**OK_BODY, "model": "gpt-9"}), 404, param="model", code="model_not_found"
    )


def test_body_over_the_limit_is_413(stack: Stack) -> None:
    big = {**OK_BODY, "messages": [{"role": "user", "content": "x" * 300_000}]}
    assert_error(post(stack, big), 413, code="request_too_large")


def test_prompt_longer_than_the_context_is_400(stack: Stack) -> None:
    long = {**OK_BODY, "messages": [{"role": "user", "content": "bee hive " * 3000}]}
    resp = post(stack, long)
    assert_error(resp, 400, code="context_length_exceeded")
    # The worker refused it, so it has a usage row (an error, no tokens): the answer names
    # it, as every answer of a request that reached a worker does.
    request_id = resp.headers["x-request-id"]
    assert request_id.isalnum()
    rows = stack.dep.sql(
        "select outcome, completion_tokens from billing_usageevent "
        f"where request_id = '{request_id}'"
    )
    assert rows == [("error", 0)]


def test_wrong_method_and_unknown_paths(stack: Stack) -> None:
    resp = httpx.get(
        f"{stack.queen.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )
    assert_error(resp, 405)
    assert resp.headers["allow"] == "POST"
    assert_error(post(stack, OK_BODY, path="/v1/nothing/here"), 404, code="unknown_url")


def test_the_queen_survives_all_of_the_above(stack: Stack) -> None:
    resp = post(stack, OK_BODY)
    assert resp.status_code == 200
    assert_openai_shape("CreateChatCompletionResponse", resp.json())


# --- failures of the machinery ---------------------------------------------------------------


def test_known_model_without_a_live_worker_is_503(stack: Stack) -> None:
    hive = Hive(stack.dep, stack.queen, "ghost-hive", ["ghost=echo:"])
    assert post(stack, {**OK_BODY, "model": "ghost"}).status_code == 200
    hive.stop()
    stack.queen.wait_for_model("ghost-hive", "ghost", present=False)
    err = assert_error(post(stack, {**OK_BODY, "model": "ghost"}), 503, code="model_unavailable")
    assert "no live worker" in err["message"]


def test_hive_killed_mid_stream_ends_the_stream_with_an_error_promptly(stack: Stack) -> None:
    hive = Hive(stack.dep, stack.queen, "victim-hive", [f"victim=llama.cpp:{bundled_gguf()}"])
    stream = stack.client().chat.completions.create(
        model="victim",
        messages=[{"role": "user", "content": "Write a very long story about bees."}],
        max_tokens=2000,
        temperature=1.0,
        stream=True,
    )
    got = 0
    killed_at = None
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got += 1
            if got == 5 and killed_at is None:
                killed_at = time.monotonic()
                stop_process(hive.proc, signal.SIGKILL)
    assert killed_at is not None
    assert time.monotonic() - killed_at < 5
    # A tenant's key: the code says what happened, the text names no hive.
    assert exc.value.code == "hive_disconnected"
    assert "victim-hive" not in str(exc.value.message)
    assert "failed while running the request" in str(exc.value.message)
    # The queen goes on serving the others.
    assert post(stack, OK_BODY).status_code == 200


def test_hive_with_a_wrong_token_is_refused_and_logged(stack: Stack) -> None:
    bad = "rbee-hive-aaaaaaaaaa-" + "C" * 40
    # DEBUG, where the websocket library logs its request headers: still no secret.
    hive = Hive(
        stack.dep,
        stack.queen,
        "intruder",
        ["x=echo:"],
        token=bad,
        wait=False,
        env={"RBEE_LOG_LEVEL": "DEBUG"},
    )
    assert hive.proc.wait(timeout=30) == 2
    hive_log = hive.log.read_text()
    assert "refused" in hive_log
    assert "Authorization: Bearer rbee-hive-aaaaaaaaaa-[redacted]" in hive_log
    assert "refused hive connection" in stack.queen.log.read_text()
    assert "C" * 40 not in stack.queen.log.read_text() + hive_log  # secrets never logged
    body = stack.queen.wait_healthy()
    assert "intruder" not in [h["name"] for h in body["hives"]]


def test_hive_using_another_hives_token_is_refused(stack: Stack) -> None:
    token = stack.dep.rbee("hive", "token", "--name", "real-name").stdout.strip()
    hive = Hive(stack.dep, stack.queen, "fake-name", ["x=echo:"], token=token, wait=False)
    assert hive.proc.wait(timeout=30) == 2
    assert "belongs to 'real-name'" in stack.queen.log.read_text()


def test_huge_bodies_are_refused_before_they_are_buffered(stack: Stack) -> None:
    limit = 262144  # the stack's RBEE_MAX_BODY_BYTES
    sent = 0

    def endless() -> Any:
        nonlocal sent
        chunk = b"x" * 65536
        while sent < 50 * 2**20:  # far more than the limit; the server must stop us early
            sent += len(chunk)
            yield chunk

    headers = {"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"}
    try:
        resp = httpx.post(
            f"{stack.queen.url}/v1/chat/completions", content=endless(), headers=headers, timeout=30
        )
        assert resp.status_code == 413
        assert resp.json()["error"]["code"] == "request_too_large"
    except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
        # The 413 closes the connection, possibly before the client has finished sending:
        # then the client sees the socket go, which is the same refusal.
        pass
    assert sent < 10 * 2**20, sent
    # A declared length over the limit is refused without reading the body.
    declared = httpx.post(
        f"{stack.queen.url}/v1/chat/completions",
        headers=headers,
        content=b"x" * (limit + 10),
        timeout=30,
    )
    assert declared.status_code == 413
    assert post(stack, OK_BODY).status_code == 200


def test_a_bad_key_hears_401_whatever_its_body(stack: Stack) -> None:
    bad = "Bearer sk-rbee-abcdefghij-" + "D" * 40
    assert_error(post(stack, None, raw=b"{not json", key=bad), 401, code="invalid_api_key")
    assert_error(post(stack, {"model": 5}, key=bad), 401, code="invalid_api_key")
