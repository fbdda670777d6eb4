"""A raw HTTP/1.1 client for the edge's tests (rbee/server.py): it writes a request on
asyncio streams and reads the answer while it is still sending the body, as a browser or
curl does, so a server that answers early and stops reading must still be heard. Over
TLS too (`tls`: a client context trusting the queen's CA)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    seconds: float  # from the end of the headers sent to the status line read
    body: dict  # type: ignore[type-arg]
    sent: int  # body bytes the client managed to send


async def post(
    port: int,
    path: str,
    headers: dict[str, str],
    length: int,
    *,
    hold: asyncio.Event | None = None,
    send: int | None = None,
    wait: float = 60,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """POST `length` declared bytes, sending them (all, or `send` of them and then waiting
    for `hold`) while reading the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {length}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode())
    await writer.drain()
    started = time.monotonic()
    sent = 0

    async def sender() -> None:
        nonlocal sent
        chunk = b"x" * 65536
        goal = length if send is None else send
        try:
            while sent < goal:
                piece = chunk[: goal - sent]
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
            if hold is not None:
                await hold.wait()
                while sent < length:
                    piece = chunk[: length - sent]
                    writer.write(piece)
                    await writer.drain()
                    sent += len(piece)
        except (ConnectionError, OSError):
            pass  # the server stopped reading and closed: the answer is what counts

    task = asyncio.create_task(sender())
    try:
        status_line = await asyncio.wait_for(reader.readline(), wait)
        seconds = time.monotonic() - started
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        status = int(status_line.split()[1])
        size = 0
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                size = int(value)
        body = json.loads(await asyncio.wait_for(reader.readexactly(size), 10)) if size else {}
        return Answer(status=status, seconds=seconds, body=body, sent=sent)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
