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
from kernel.lua import LuaScript

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
            await self._send(channel, message)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if redis_state.is_outage(exc):
                redis_state.failed(self._redis, type(exc).__name__)
            raise

    async def _send(self, channel: str, message: dict[str, Any]) -> None:
        """channels_redis' send in one round trip instead of four: dropping the expired
        messages, the capacity check, the push and the expiry are one script on the
        server (the same keys, scores and message encoding, so its receive is unchanged).
        Every message the queen and its hives exchange is one of these."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        target = channel
        if "!" in channel:
            message = {**message, "__asgi_channel__": channel}
            target = self.non_local_name(channel)
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        connection = self.connection(index)
        now = time.time()
        args = [
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            repr(now),
            self.serialize(message),
            int(self.expiry),
        ]
        if not await _SEND(connection, [self.prefix + target], args):
            raise ChannelFull()

    async def _brpop_with_clean(self, index: int, channel: str, timeout: int) -> Any:
        """channels_redis' receive step with a fast path: putting back what a cancelled
        receive left in the channel's backup queue, taking the oldest message and
        keeping it in the backup until it is handled are one script; only when the
        channel is empty does the receive block (BZPOPMIN, then the backup, as
        channels_redis does). A busy channel costs one round trip per message instead of
        three, an empty one the same three."""
        backup = self._backup_channel_name(channel)
        connection = self.connection(index)
        member = await _POP(connection, [channel, backup], [])
        if member is not None:
            return member
        result = await connection.bzpopmin(channel, timeout=timeout)
        if result is None:
            return None
        _, member, score = result
        await connection.zadd(backup, {member: float(score)})
        return member


# channels_redis' four send commands (RedisChannelLayer.send), as one script: KEYS[1] the
# channel's sorted set; ARGV: the expiry cutoff, the capacity, the score (send time), the
# encoded message, the key's time to live. 0 when the channel is full.
_SEND = LuaScript("""
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
""")

# A receive's first step: KEYS[1] the channel, KEYS[2] its backup queue. What the backup
# holds (taken by a receive that was cancelled before handling it) goes back into the
# channel, then the oldest message is taken and kept in the backup (removed once handled,
# as channels_redis does). nil when the channel is empty.
_POP = LuaScript("""
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
  redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then
  return false
end
redis.call('ZADD', KEYS[2], popped[2], popped[1])
return popped[1]
""")


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
