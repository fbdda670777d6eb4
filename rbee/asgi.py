"""ASGI entry point: HTTP through Django, the hive websocket through Channels."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from hives.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Hives authenticate with their token inside the consumer; there are no
        # browser sessions on this socket, so no origin or session middleware.
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
