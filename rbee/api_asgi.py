"""A lean ASGI entry for the OpenAI API (`/v1/...`) and `/healthz`.

Django's own ASGI handler costs several milliseconds per request here, most of it
not in the view: a new thread per request (ThreadSensitiveContext) that the
request_started/request_finished signals hop into to close database connections,
and one thread hop per sync middleware. The API needs none of it: it
authenticates with bearer keys itself, has no sessions or CSRF, and its
database access runs on a shared executor that manages its own connections
(kernel/aio.py). So this app builds Django's request object, resolves the URL with
Django's resolver, awaits the async view and sends its response, streaming ones
as they are produced. A client that disconnects cancels the view, so a job in
flight is cancelled on its hive.

django-prometheus' middleware pair counts these requests into the same series as the
rest of the site (requests, latency and responses by view and method): their methods are
called here directly, since they only count in memory, where Django would hop to a
thread and back for each of them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponseBase
from django.urls import Resolver404, get_resolver
from django_prometheus.middleware import PrometheusBeforeMiddleware

from inference import cors, request_ids
from inference.dispatch import new_job_id
from inference.errors import APIError
from rbee.prometheus import PrometheusAfterMiddleware

logger = logging.getLogger("rbee.api")

Scope = dict[str, Any]


class Disconnected(Exception):
    pass


async def _read_body(receive: Any, limit: int) -> bytes:
    """The request body, keeping at most limit + 1 bytes (the view answers 413 past limit)."""
    parts: list[bytes] = []
    kept = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        if kept <= limit and chunk:
            chunk = chunk[: limit + 1 - kept]
            parts.append(chunk)
            kept += len(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_response(response: HttpResponseBase, send: Any) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if response.streaming:
        try:
            async for chunk in response:  # type: ignore[attr-defined]
                await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        finally:
            # Always end the body, even when the stream failed: a chunked response
            # that is never finished leaves the client waiting forever.
            await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.body", "body": response.content})  # type: ignore[attr-defined]


def _body_limit(scope: Scope) -> int:
    """How much of the body to keep: multipart uploads may have RBEE_MAX_BODY_BYTES, anything
    else is JSON or refused (415), so RBEE_MAX_JSON_BYTES is enough (the view answers 413
    past it)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-type":
            if value.split(b";", 1)[0].strip().lower() == b"multipart/form-data":
                return int(settings.RBEE_MAX_BODY_BYTES)
            break
    return min(settings.RBEE_MAX_JSON_BYTES, settings.RBEE_MAX_BODY_BYTES)


def _not_called(request: Any) -> Any:
    raise AssertionError("the API's metrics middleware is called by method, never as a chain")


class APIApplication:
    def __init__(self) -> None:
        self.resolver = get_resolver()
        self.before = PrometheusBeforeMiddleware(_not_called)
        self.after = PrometheusAfterMiddleware(_not_called)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            body = await _read_body(receive, _body_limit(scope))
        except Disconnected:
            return
        request = ASGIRequest(scope, io.BytesIO(body))
        serving = asyncio.ensure_future(self._serve(request, send))
        watcher = asyncio.ensure_future(receive())  # the next message can only be a disconnect
        try:
            done, _ = await asyncio.wait({serving, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if serving not in done:
                serving.cancel()  # the client went away: stop the view and its job
            await asyncio.gather(serving, return_exceptions=True)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if serving.done() and not serving.cancelled() and serving.exception() is not None:
            logger.error("error serving %s", request.path, exc_info=serving.exception())

    async def _serve(self, request: ASGIRequest, send: Any) -> None:
        started = time.monotonic()
        self._counted(self.before.process_request, request)
        self._counted(self.after.process_request, request)
        api = request.path.startswith("/v1")
        preflight = cors.preflight(request) if api else None
        if preflight is not None:  # a browser's CORS preflight: no view runs for it
            response: HttpResponseBase = preflight
        else:
            response = await self._view(request)
        if api:
            cors.decorate(request, response)
            if "X-Request-Id" not in response:  # the few answers no /v1 view gave
                response["X-Request-Id"] = new_job_id()
            if "openai-processing-ms" not in response:  # e.g. a preflight's
                request_ids.stamp(request, response, started)
        if settings.SECURE_HSTS_SECONDS and request.is_secure():
            # What SecurityMiddleware does for the rest of the site (production profile).
            hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                hsts += "; includeSubDomains"
            response.headers.setdefault("Strict-Transport-Security", hsts)
        self._counted(self.after.process_response, request, response)
        self._counted(self.before.process_response, request, response)
        # Not response.close(): it would fire request_finished, whose receivers touch
        # database connections from the event loop; the API's are managed in kernel/aio.py.
        await _send_response(response, send)

    async def _view(self, request: ASGIRequest) -> HttpResponseBase:
        try:
            match = self.resolver.resolve(request.path_info)
        except Resolver404:
            return APIError(
                404, f"Invalid URL ({request.method} {request.path})", code="unknown_url"
            ).response()
        request.resolver_match = match
        self._counted(self.after.process_view, request, match.func, *match.args)
        try:
            response: HttpResponseBase = await match.func(request, *match.args, **match.kwargs)
        except Exception as exc:
            logger.exception("unexpected error on %s", request.path)
            self._count_exception(exc, match.view_name)
            response = APIError(
                500,
                "The server had an error while processing your request.",
                code="internal_error",
            ).response()
        return response

    @staticmethod
    def _counted(method: Any, *args: Any) -> None:
        """One of django-prometheus' middleware methods (in-memory counting); whatever a
        request carries, counting it never fails it (e.g. a Content-Length it cannot read)."""
        try:
            method(*args)
        except Exception:
            logger.exception("could not count a request in the metrics")

    def _count_exception(self, exc: Exception, view: str | None) -> None:
        """What django-prometheus' process_exception counts (its latency is counted once,
        with the 500 this becomes)."""
        counters = self.after.metrics
        counters.exceptions_by_type.labels(type=type(exc).__name__).inc()
        counters.exceptions_by_view.labels(view=view or "<unnamed view>").inc()
