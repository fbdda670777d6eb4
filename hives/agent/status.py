"""The hive's small local status API on its HivePort (default 7835): GET /status."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

logger = logging.getLogger("hives.status")


class StatusServer:
    def __init__(self, agent: Any, host: str, port: int) -> None:
        self.agent = agent
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            logger.warning("hive status API not started on %s:%s: %s", self.host, self.port, exc)
            return
        sock = self.server.sockets[0].getsockname()
        self.port = int(sock[1])
        logger.info("hive status API on http://%s:%s/status", self.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def body(self) -> dict[str, Any]:
        from hives.agent.devices import detect_devices

        return {
            "name": self.agent.name,
            "queen": self.agent.url,
            "connected": self.agent.connected,
            "devices": detect_devices(),
            "workers": self.agent.describe_workers(),
        }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1] in ("/status", "/"):
                status, payload = "200 OK", self.body()
            else:
                status, payload = "404 Not Found", {"error": "not found; try GET /status"}
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
