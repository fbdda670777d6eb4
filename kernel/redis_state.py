"""What this process knows of each Redis it uses: whether one just failed to answer.

The request path reads Redis up to three times before a job is dispatched (the generation
counters, kernel/generations.py; the limiter's admission, billing/limits.py; the channel
layer's send, kernel/channel_layer.py), each bounded by RBEE_REDIS_TIMEOUT. A Redis that
is blackholed (takes connections, answers nothing) would cost a request one timeout per
read. Instead, the first read that fails records it here, and for `FAIL_FAST_S` every other
reader of the same Redis fails at once: a request is a 503 within one timeout, and the
next read after the window tries Redis again, so service resumes by itself."""

from __future__ import annotations

import threading
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

FAIL_FAST_S = 2.0
"""How long reads of a Redis fail at once after one found it down or not answering."""

_down: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def down(url: str) -> str | None:
    """Why the Redis at `url` is taken as down now (the failure's name), or None."""
    entry = _down.get(url)
    if entry is None or time.monotonic() >= entry[0]:
        return None
    return entry[1]


def is_outage(exc: BaseException) -> bool:
    """Whether a Redis call's error says the server is down or not answering (refused,
    reset, timed out): what `failed` is for. Not an error Redis answered with (WRONGTYPE,
    READONLY...: the server is up), and not a client's own pool running out of
    connections under load (the server is up; refusing every reader of it would turn a
    busy moment into an outage)."""
    if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
        return False
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError))


def failed(url: str, reason: str) -> None:
    """Record that a read of the Redis at `url` just failed (`reason`: the error's name)."""
    with _lock:
        _down[url] = (time.monotonic() + FAIL_FAST_S, reason)


def answered(url: str) -> None:
    """Forget a failure of the Redis at `url` (a read succeeded; tests)."""
    with _lock:
        _down.pop(url, None)
