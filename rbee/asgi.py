"""ASGI entry point.

Three targets, chosen by path:

* `/v1/...` and `/healthz`: Django views served by rbee/api_asgi.py, with no
  middleware, signals or per-request thread. The OpenAI API does its own bearer
  authentication and needs no sessions, CSRF, messages or clickjacking headers;
  Django's handler around it cost ~10 ms per request here (bench/README.md).
* `/hive/ws` websockets: the hive consumer (Channels), token-authenticated.
* `/ui/ws...` websockets: the dashboard's live views (web/routing.py).
* everything else (the admin, /ui, /console, /portal): Django with the full
  middleware stack.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from hives.routing import websocket_urlpatterns  # noqa: E402
from rbee.api_asgi import APIApplication  # noqa: E402
from web.routing import websocket_urlpatterns as web_websockets  # noqa: E402

API_PREFIXES = ("/v1/", "/healthz", "/metrics")

api_app = APIApplication()


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
        # browser sessions on their socket, so no origin or session middleware. The web
        # faces' live views wrap each of theirs in web.ws.browser_socket (same origin,
        # session user).
        "websocket": URLRouter([*websocket_urlpatterns, *web_websockets]),
    }
)
