"""The Redis channel layer with short socket timeouts.

channels_redis blocks each receive on BZPOPMIN for `brpop_timeout` seconds (5 by default)
on a connection whose socket_timeout must be longer still, so a Redis that stops
answering held every send for that long. Here the blocking pop waits 1 s, and the
connections' socket_timeout (RBEE_REDIS_TIMEOUT, a little longer than that) bounds every
command: a send to a Redis that is down or blackholed fails within seconds, and the
request is a 503 (inference/pipeline.py) rather than a hang."""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer as _RedisChannelLayer

BLOCK_S = 1
"""How long one blocking pop waits (the layer loops until a message comes)."""


class RedisChannelLayer(_RedisChannelLayer):  # type: ignore[misc]
    brpop_timeout = BLOCK_S
