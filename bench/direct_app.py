"""The baseline for bench/overhead.py: the echo engine behind a bare ASGI app on Daphne.

Same server, same HTTP client, same engine as through rbee; no auth, no database,
no channel layer, no hive, no worker process. The difference is what rbee adds.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from hives.agent.engines.echo import EchoEngine
from hives.spec import ModelSpec

_engine = EchoEngine()
_engine.load(ModelSpec(name="echo-bench", engine="echo", source=""))


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    req = json.loads(await _body(receive))
    events = list(_engine.chat(req, lambda: False))
    cid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not req.get("stream"):
        text = "".join(e["text"] for e in events if e["kind"] == "delta")
        body = json.dumps(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": req["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": events[-1]["usage"],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    for e in events:
        if e["kind"] == "delta":
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req["model"],
                "choices": [{"index": 0, "delta": {"content": e["text"]}, "finish_reason": None}],
            }
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                }
            )
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
