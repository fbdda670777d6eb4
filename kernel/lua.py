"""A Lua script for Redis, run by EVALSHA and falling back to EVAL when the server answers
NOSCRIPT (after a restart, a SCRIPT FLUSH, or on a failover to a replica that never saw
it; EVAL also caches it on the server again). Either way it is one atomic call and one
round trip. Used by the limiter (billing/limits.py) and the channel layer
(kernel/channel_layer.py)."""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Any, keys: list[Any], args: list[Any]) -> Any:
        """Run it on `client` (an asyncio Redis client) with KEYS and ARGV."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)
