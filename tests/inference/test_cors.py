"""CORS on /v1 (inference/cors.py): only for the configured origins; never credentials."""

from __future__ import annotations

import asyncio
from typing import Any

from django.http import HttpResponse
from django.test import RequestFactory

from inference import cors
from rbee.api_asgi import APIApplication

ASK = {
    "HTTP_ORIGIN": "https://app.example",
    "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization, x-api-key",
}


def test_off_by_default(settings: Any) -> None:
    settings.RBEE_CORS_ORIGINS = []
    request = RequestFactory().options("/v1/models", **ASK)
    assert cors.preflight(request) is None
    response = HttpResponse()
    cors.decorate(request, response)
    assert "Access-Control-Allow-Origin" not in response and "Vary" not in response


def test_named_origins_only(settings: Any) -> None:
    settings.RBEE_CORS_ORIGINS = ["https://app.example"]
    pre = cors.preflight(RequestFactory().options("/v1/models", **ASK))
    assert pre is not None and pre.status_code == 204
    assert pre["Access-Control-Allow-Origin"] == "https://app.example"
    assert pre["Access-Control-Allow-Headers"] == "authorization, x-api-key"
    assert "Access-Control-Allow-Credentials" not in pre
    other = {**ASK, "HTTP_ORIGIN": "https://evil.example"}
    assert cors.preflight(RequestFactory().options("/v1/models", **other)) is None
    # Not a preflight (no Access-Control-Request-Method): the view answers it.
    plain = {"HTTP_ORIGIN": "https://app.example"}
    assert cors.preflight(RequestFactory().options("/v1/models", **plain)) is None
    # A header list that is not one is not echoed.
    odd = {**ASK, "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "a\r\nb"}
    odd_pre = cors.preflight(RequestFactory().options("/v1/models", **odd))
    assert odd_pre is not None and "Access-Control-Allow-Headers" not in odd_pre
    response = HttpResponse()
    cors.decorate(RequestFactory().get("/v1/models", HTTP_ORIGIN="https://evil.example"), response)
    assert "Access-Control-Allow-Origin" not in response and response["Vary"] == "Origin"


def test_any_origin_in_development(settings: Any) -> None:
    settings.RBEE_CORS_ORIGINS = ["*"]
    response = HttpResponse()
    cors.decorate(RequestFactory().get("/v1/models", HTTP_ORIGIN="https://x.example"), response)
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "x-request-id" in response["Access-Control-Expose-Headers"]


async def test_a_preflight_carries_the_request_id_and_processing_time(settings: Any) -> None:
    """Every /v1 answer carries x-request-id and openai-processing-ms: the preflight too,
    which is answered before any view (on an unknown path as on a known one)."""
    settings.RBEE_CORS_ORIGINS = ["https://app.example"]
    app = APIApplication()
    for path in ("/v1/chat/completions", "/v1/nowhere"):
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "http",
            "method": "OPTIONS",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "server": ("127.0.0.1", 7833),
            "client": ("127.0.0.1", 5000),
            "headers": [
                (b"host", b"127.0.0.1:7833"),
                (b"origin", b"https://app.example"),
                (b"access-control-request-method", b"POST"),
            ],
        }
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.Event().wait()  # no disconnect: the answer comes first
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        start = sent[0]
        assert start["status"] == 204, path
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        assert headers["access-control-allow-origin"] == "https://app.example"
        assert len(headers["x-request-id"]) == 32
        assert int(headers["openai-processing-ms"]) >= 0, path
