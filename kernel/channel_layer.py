"""The channel layers: Redis with short socket timeouts (below), and the in-memory one of the
embedded default without a deep copy of every message (`InMemoryChannelLayer`, at the end).

The Redis channel layer with short socket timeouts, failing fast while Redis is down.

channels_redis blocks each receive on BZPOPMIN for `brpop_timeout` seconds (5 by default)
on a connection whose socket_timeout must be longer still, so a Redis that stops
answering held every send for that long. Here the blocking pop waits 1 s, and the
connections' socket_timeout (RBEE_REDIS_TIMEOUT, a little longer than that) bounds every
command: a send to a Redis that is down or blackholed fails within seconds, and the
request is a 503 (inference/pipeline.py) rather than a hang.

After a send failed that way, sends fail at once for a moment, as do the other reads of
the same Redis on the request path (kernel/redis_state.py): a request's follow-up
messages, such as the cancel of the job whose dispatch just failed, would otherwise each
wait out the timeout again. The next send after that window tries Redis again, so service
resumes by itself when Redis is back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kernel import redis_state

BLOCK_S = 1
"""How long one blocking pop waits (the layer loops until a message comes)."""


class RedisChannelLayer(_RedisChannelLayer):  # type: ignore[misc]
    brpop_timeout = BLOCK_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Which Redis, for kernel/redis_state.py (shared with the limiter and the
        # generation counters, which read the same one: RBEE_REDIS_URL).
        hosts = kwargs.get("hosts") or (args[0] if args else None) or [{}]
        first = hosts[0]
        self._redis = str(first.get("address", "") if isinstance(first, dict) else first)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        reason = redis_state.down(self._redis)
        if reason is not None:
            raise RedisConnectionError(f"Redis is not answering ({reason})")
        try:
            await super().send(channel, message)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            redis_state.failed(self._redis, type(exc).__name__)
            raise


class InMemoryChannelLayer(_InMemoryChannelLayer):  # type: ignore[misc]
    """channels' in-memory layer, copying each message's top-level dict instead of deep-copying
    the whole message (the job's request, every batch of events: ~90 copied objects per
    request on the embedded default, bench/README.md, issue 15).

    On Redis a receiver always gets its own decoded copy; here the nested values are shared
    between sender and receiver, which is safe because rbee never changes a message, or
    anything inside it, once it is sent: senders build each message fresh (inference/dispatch.py,
    hives/consumers.py, the fleet broadcasts) and receivers only read it or hand it on.
    The top-level copy keeps what a receiver does to the message itself (e.g. popping its
    "type") from reaching another receiver of the same group message."""

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            queue.put_nowait((time.time() + self.expiry, dict(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None
