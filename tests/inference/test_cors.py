"""CORS on /v1 (inference/cors.py): only for the configured origins; never credentials."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.test import RequestFactory

from inference import cors

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
