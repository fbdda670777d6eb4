"""The web faces' websockets (rbee/asgi.py routes them beside the hives' socket). Each is
wrapped by web.ws.browser_socket: same-origin only, with the session's user in scope."""

from __future__ import annotations

from typing import Any

from django.urls import path

from web.ui.consumers import FleetConsumer
from web.ws import browser_socket

websocket_urlpatterns: list[Any] = [
    path("ui/ws/fleet", browser_socket(FleetConsumer.as_asgi())),
]
