"""ASGI entry point.

Three targets, chosen by path:

* `/v1/...` and `/healthz`: Django views with NO middleware. The OpenAI API does
  its own bearer authentication and needs no sessions, CSRF, messages or
  clickjacking headers; Django runs each sync middleware of an async request in a
  thread hop of its own, which cost ~8 ms per request here (bench/README.md).
* `/hive/ws` websockets: the hive consumer (Channels), token-authenticated.
* everything else (the admin, later the dashboard and portal): Django with the
  full middleware stack.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response

django_asgi_app = get_asgi_application()

from hives.routing import websocket_urlpatterns  # noqa: E402

API_PREFIXES = ("/v1/", "/healthz")


class APIHandler(ASGIHandler):
    """Django's ASGI handler with an empty middleware chain."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        get_response = self._get_response_async if is_async else self._get_response  # type: ignore[attr-defined]
        handler = convert_exception_to_response(get_response)
        self._middleware_chain = handler


api_app = APIHandler()


async def http_router(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope.get("path", "")
    if path.startswith(API_PREFIXES) or path == "/v1":
        await api_app(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_router,
        # Hives authenticate with their token inside the consumer; there are no
        # browser sessions on this socket, so no origin or session middleware.
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
