"""Daphne, with a ceiling on request bodies.

Twisted buffers a whole request body (to a temporary file, then into the app's
queue) before the ASGI application sees any of it, so a limit checked by the app
protects nothing against a client that streams gigabytes. This request class
answers 413 as soon as the declared length, or the bytes received so far,
exceed the ceiling, and drops the connection.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from daphne import http_protocol

logger = logging.getLogger("rbee.server")


def _too_large_response(limit: int) -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": f"The request body is larger than this server accepts ({limit} bytes).",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_too_large",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


def install_body_limit(limit: int) -> None:
    base: Any = http_protocol.WebRequest
    if getattr(base, "rbee_body_limit", None) is not None:
        base = base.__mro__[1]

    class LimitedWebRequest(base):  # type: ignore[misc, valid-type]
        rbee_body_limit = limit

        def gotLength(self, length: int | None) -> None:
            self._rbee_received = 0
            self._rbee_refused = False
            if length is not None and length > limit:
                self._refuse()
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:
            if self._rbee_refused:
                return
            self._rbee_received += len(data)
            if self._rbee_received > limit:
                self._refuse()
                return
            super().handleContentChunk(data)

        def _refuse(self) -> None:
            self._rbee_refused = True
            transport = self.channel.transport
            logger.warning(
                "refused a request body over %d bytes from %s",
                limit,
                getattr(transport.getPeer(), "host", "?"),
            )
            transport.write(_too_large_response(limit))
            transport.loseConnection()

    http_protocol.WebRequest = LimitedWebRequest  # looked up per connection by Daphne
