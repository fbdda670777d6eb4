"""The web faces' websockets (rbee/asgi.py routes them beside the hives' socket). Each is
wrapped by web.ws.browser_socket: same-origin only, with the session's user in scope."""

from __future__ import annotations

from typing import Any

websocket_urlpatterns: list[Any] = []
