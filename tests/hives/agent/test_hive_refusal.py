"""The hive's side of a refusal: a queen that will not talk to it (another protocol
version, here) makes the agent log the queen's reason and exit with status 2, rather than
retry forever. A small websocket server stands in for the queen."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import websockets

from hives.agent.agent import HiveAgent
from hives.protocol import CLOSE_BAD_VERSION, PROTOCOL_VERSION, refused, version_refusal

pytestmark = pytest.mark.asyncio


async def refuse_versions(*, send_reason: bool) -> tuple[Any, list[dict[str, Any]]]:
    hellos: list[dict[str, Any]] = []

    async def handler(ws: Any) -> None:
        hello = json.loads(await ws.recv())
        hellos.append(hello)
        reason = version_refusal({**hello, "protocol": PROTOCOL_VERSION + 1}, queen_version="9.0")
        if send_reason:
            await ws.send(json.dumps(refused(reason)))
        await ws.close(CLOSE_BAD_VERSION, "incompatible protocol version")

    server = await websockets.serve(handler, "127.0.0.1", 0)
    return server, hellos


@pytest.mark.parametrize("send_reason", [True, False])
async def test_a_refused_hive_logs_why_and_exits_with_status_2(
    send_reason: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server, hellos = await refuse_versions(send_reason=send_reason)
    port = server.sockets[0].getsockname()[1]
    agent = HiveAgent(
        queen=f"http://127.0.0.1:{port}", token="t", name="h", models=[], status_port=None
    )
    try:
        with caplog.at_level(logging.ERROR, logger="hives.agent"):
            # Retrying (the bug this guards against) would never end: give it 10 s.
            assert await asyncio.wait_for(agent._connect_loop(), 10) == 2
    finally:
        server.close()
        await server.wait_closed()
    (hello,) = hellos  # refused once, never retried
    assert hello["protocol"] == PROTOCOL_VERSION
    logged = caplog.text
    assert "the queen refused this hive" in logged
    if send_reason:
        assert "speaks protocol version" in logged and "rbee 9.0" in logged
    else:
        assert "incompatible protocol version" in logged
