"""CORS for /v1: web pages on the origins in RBEE_CORS_ORIGINS (rbee/profile.py) may call
the API from a browser. None may by default; production refuses '*'.

A preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed
origin is answered here, before any view, with 204 and what the browser asked to send;
every other answer to an allowed origin says so (Access-Control-Allow-Origin) and lets
the page read the headers clients use (request ids, processing time, rate limits). The
API authenticates with keys in headers, never cookies, so credentials are never allowed.
An origin that is not allowed gets no CORS header at all: the browser keeps its answer
from the page (and its preflight falls through to the view, which refuses OPTIONS).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
# What a page may read from an answer besides the CORS-safelisted headers.
EXPOSE_HEADERS = ", ".join(
    (
        "x-request-id",
        "request-id",
        "openai-processing-ms",
        "x-client-request-id",
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    )
)
MAX_AGE = "600"
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def allowed_origin(request: HttpRequest) -> str:
    """The value of Access-Control-Allow-Origin for this request: its Origin when that is
    allowed ("*" when any is), else ""."""
    origin = str(request.META.get("HTTP_ORIGIN", ""))
    allowed = settings.RBEE_CORS_ORIGINS
    if not origin or not allowed:
        return ""
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else ""


def preflight(request: HttpRequest) -> HttpResponse | None:
    """The answer to a CORS preflight from an allowed origin; None for anything else."""
    if request.method != "OPTIONS" or not request.META.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
        return None
    origin = allowed_origin(request)
    if not origin:
        return None
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Methods"] = ALLOW_METHODS
    asked = str(request.META.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")).strip()
    if asked and _HEADER_LIST.match(asked):
        response["Access-Control-Allow-Headers"] = asked
    response["Access-Control-Max-Age"] = MAX_AGE
    response["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    return response


def decorate(request: HttpRequest, response: HttpResponseBase) -> None:
    """The CORS headers of an answer to an allowed origin."""
    if "Access-Control-Allow-Origin" in response:
        return
    origin = allowed_origin(request)
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if settings.RBEE_CORS_ORIGINS and "*" not in settings.RBEE_CORS_ORIGINS:
        response["Vary"] = ", ".join(v for v in (response.get("Vary"), "Origin") if v)
