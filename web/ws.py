"""Browser websockets (the live views): the signed-in user from the session cookie, and
only from pages of this very queen. A cross-site page must not open a socket with the
operator's cookie (cross-site websocket hijacking), so the Origin must name the same
scheme-less host and port as the Host header; Django's ALLOWED_HOSTS is checked too."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.http.request import split_domain_port


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


class SameOriginValidator:
    """Refuse (close before accept) a websocket whose Origin is not the Host it was sent to."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        if not origin or not host or urlsplit(origin).netloc.lower() != host.lower():
            await send({"type": "websocket.close", "code": 4403})
            return None
        domain, _port = split_domain_port(host)
        if not domain:
            await send({"type": "websocket.close", "code": 4403})
            return None
        return await self.app(scope, receive, send)


def browser_socket(app: Any) -> Any:
    """Wrap a browser-facing consumer: same origin, allowed host, session user in scope."""
    return SameOriginValidator(AllowedHostsOriginValidator(AuthMiddlewareStack(app)))


def user_group(user_id: int) -> str:
    """The Channels group of one signed-in user's browser sockets (web.signals tells it
    when that user signs out)."""
    return f"web.user.{int(user_id)}"
