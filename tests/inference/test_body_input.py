"""What a /v1 body must be before it is parsed: the right media type (415 otherwise, so a
web page cannot drive the API with a "simple" cross-site request) and, for JSON, at most
RBEE_MAX_JSON_BYTES (413), checked from Content-Length and from what was read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import RequestFactory, override_settings

from inference.errors import APIError
from inference.pipeline import json_body_limit, read_form, read_json
from rbee.api_asgi import _body_limit

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
rf = RequestFactory()


def _json(content_type: str | None, body: bytes = BODY, **meta: Any) -> dict[str, Any]:
    request = rf.post("/v1/chat/completions", data=body, content_type=content_type or "")
    if content_type is None:
        del request.META["CONTENT_TYPE"]
    request.META.update(meta)
    return read_json(request)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_json_bodies_are_application_json(content_type: str) -> None:
    assert _json(content_type)["model"] == "m"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json-patch+json",
    ],
)
def test_anything_else_is_415(content_type: str | None) -> None:
    with pytest.raises(APIError) as exc:
        _json(content_type)
    err = exc.value
    assert err.status == 415
    assert err.code == "unsupported_media_type"
    assert err.body()["error"]["type"] == "invalid_request_error"
    assert "application/json" in err.message


@override_settings(RBEE_MAX_JSON_BYTES=1000, RBEE_MAX_BODY_BYTES=10_000)
def test_json_over_its_limit_is_413() -> None:
    assert json_body_limit() == 1000
    small = json.dumps({"model": "m", "x": "a" * 900}).encode()
    assert _json("application/json", small)["model"] == "m"
    big = json.dumps({"model": "m", "x": "a" * 1000}).encode()
    with pytest.raises(APIError) as exc:
        _json("application/json", big)
    assert exc.value.status == 413 and exc.value.code == "request_too_large"
    # A declared length over the limit is refused before the body is read.
    with pytest.raises(APIError) as exc:
        _json("application/json", small, CONTENT_LENGTH="5000")
    assert exc.value.status == 413
    # ... and a lying one does not help.
    with pytest.raises(APIError) as exc:
        _json("application/json", big, CONTENT_LENGTH="10")
    assert exc.value.status == 413


def test_json_limit_defaults_to_one_mib_and_never_exceeds_the_body_limit() -> None:
    with override_settings(RBEE_MAX_BODY_BYTES=26 * 2**20):
        assert json_body_limit() == 2**20
    with override_settings(RBEE_MAX_BODY_BYTES=262144):
        assert json_body_limit() == 262144


def test_a_form_endpoint_needs_multipart() -> None:
    request = rf.post("/v1/audio/transcriptions", data=BODY, content_type="application/json")
    with pytest.raises(APIError) as exc:
        read_form(request)
    assert exc.value.status == 415 and exc.value.code == "unsupported_media_type"
    assert "multipart/form-data" in exc.value.message
    request = rf.post("/v1/audio/transcriptions", data="model=w", content_type="text/plain")
    with pytest.raises(APIError) as exc:
        read_form(request)
    assert exc.value.status == 415


@override_settings(RBEE_MAX_JSON_BYTES=1000, RBEE_MAX_BODY_BYTES=10_000)
def test_multipart_uploads_keep_the_larger_limit() -> None:
    request = rf.post("/v1/audio/transcriptions", {"model": "w", "prompt": "p" * 5000})
    fields, _ = read_form(request)
    assert fields["model"] == "w"


@override_settings(RBEE_MAX_JSON_BYTES=1000, RBEE_MAX_BODY_BYTES=10_000)
def test_the_asgi_app_keeps_only_what_the_body_type_may_have() -> None:
    def scope(ctype: bytes | None) -> dict[str, Any]:
        headers = [(b"content-type", ctype)] if ctype is not None else []
        return {"type": "http", "headers": headers}

    assert _body_limit(scope(b"multipart/form-data; boundary=x")) == 10_000
    assert _body_limit(scope(b"Multipart/Form-Data; boundary=x")) == 10_000
    assert _body_limit(scope(b"application/json")) == 1000
    assert _body_limit(scope(b"text/plain")) == 1000
    assert _body_limit(scope(None)) == 1000
