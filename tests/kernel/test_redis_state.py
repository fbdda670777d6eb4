"""kernel/redis_state.py: a Redis that stops answering costs a request one timeout, not one
per read. The generation counters, the limiter and the channel layer read the same Redis
on the request path; the first that times out makes the others fail at once, and all of
them ask Redis again once the moment has passed.

The blackhole is a real listening socket that is never accepted from: the kernel completes
the connection, and nothing is ever answered (what a frozen Redis looks like)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from billing.limits import STORE_DOWN, Cost, Limits, RedisLimiter
from kernel import generations, redis_state
from kernel.channel_layer import RedisChannelLayer

TIMEOUT_S = 0.5


@pytest.fixture
def blackhole(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(redis_state, "_down", {})  # this test's own memory, restored after
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()


async def test_one_timeout_makes_the_other_readers_of_that_redis_fail_at_once(
    blackhole: str, settings: Any
) -> None:
    settings.REDIS_URL = blackhole
    settings.RBEE_REDIS_TIMEOUT = TIMEOUT_S
    started = time.monotonic()
    assert await generations.current_all("test-a", "test-b") == [None, None]
    assert time.monotonic() - started >= TIMEOUT_S * 0.9  # it did wait for Redis once
    assert redis_state.down(blackhole) == "TimeoutError"

    limiter = RedisLimiter(blackhole, prefix="rbee-test", timeout=TIMEOUT_S)
    layer = RedisChannelLayer(
        hosts=[{"address": blackhole, "socket_timeout": TIMEOUT_S}], prefix="rbee-test"
    )
    started = time.monotonic()
    with pytest.raises(STORE_DOWN) as exc:
        await limiter.admit("t1", Limits(requests_per_minute=10), Cost(requests=1))
    assert isinstance(exc.value, RedisConnectionError)
    assert "TimeoutError" in str(exc.value)
    with pytest.raises(RedisConnectionError):
        await layer.send("hive.1", {"type": "job.start"})
    assert time.monotonic() - started < TIMEOUT_S / 2  # neither waited

    # Another Redis is not taken as down for it.
    assert redis_state.down("redis://127.0.0.1:6379/0") is None


async def test_past_the_moment_each_reader_asks_redis_again(
    blackhole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_state, "FAIL_FAST_S", 0.2)
    limiter = RedisLimiter(blackhole, prefix="rbee-test", timeout=TIMEOUT_S)
    redis_state.failed(blackhole, "TimeoutError")
    with pytest.raises(RedisConnectionError):
        await limiter.admit("t1", Limits(requests_per_minute=10), Cost(requests=1))
    time.sleep(0.25)
    assert redis_state.down(blackhole) is None
    started = time.monotonic()
    with pytest.raises(RedisTimeoutError):  # asked, and it timed out again
        await limiter.admit("t1", Limits(requests_per_minute=10), Cost(requests=1))
    assert time.monotonic() - started >= TIMEOUT_S * 0.9
    assert redis_state.down(blackhole) == "TimeoutError"
    await limiter.aclose()


async def test_a_redis_that_answers_is_used_as_ever() -> None:
    import os

    url = os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0"
    assert redis_state.down(url) is None
    limiter = RedisLimiter(url, prefix=f"rbee-test-{time.monotonic_ns()}", timeout=TIMEOUT_S)
    decision = await limiter.admit("t1", Limits(requests_per_minute=10), Cost(requests=1))
    assert decision.allowed
    await limiter.reset("t1")
    await limiter.aclose()


async def test_a_settle_in_the_moment_after_a_failure_still_gives_the_slot_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reservation is settled once (a request's end, or its release when the dispatch
    failed, often just after a send found Redis not answering): a settle that failed at
    once without asking a Redis that answers would hold the tenant's concurrency slot and
    reserved quota for the whole lease (LEASE_S, 10 min), refusing its next requests."""
    import os

    monkeypatch.setattr(redis_state, "_down", {})
    url = os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0"
    limiter = RedisLimiter(url, prefix=f"rbee-test-{time.monotonic_ns()}", timeout=TIMEOUT_S)
    one_at_a_time = Limits(max_concurrent=1)
    first = await limiter.admit("t1", one_at_a_time, Cost(requests=1))
    assert first.allowed
    redis_state.failed(url, "TimeoutError")  # another reader's call just timed out
    await limiter.settle("t1", first.ticket, Cost(requests=0))  # asks Redis all the same
    redis_state.answered(url)
    assert (await limiter.admit("t1", one_at_a_time, Cost(requests=1))).allowed
    await limiter.reset("t1")
    await limiter.aclose()


async def test_an_error_redis_answers_with_is_not_an_outage(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WRONGTYPE, READONLY...: the server is up; nothing else is refused for it."""
    import os
    import uuid

    import redis

    monkeypatch.setattr(redis_state, "_down", {})
    url = os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0"
    settings.REDIS_URL = url
    settings.RBEE_GENERATIONS_PREFIX = f"rbee-test-{uuid.uuid4().hex[:8]}:gen:"
    client = redis.Redis.from_url(url)
    client.hset(generations._key("wrong"), "a", "1")  # not a counter: GET answers an error
    try:
        assert await generations.current("wrong") is None  # nothing kept may be used
        assert redis_state.down(url) is None
    finally:
        client.delete(generations._key("wrong"))
        client.close()


def test_a_pool_out_of_connections_is_not_an_outage() -> None:
    assert not redis_state.is_outage(RedisConnectionError("No connection available."))
    assert redis_state.is_outage(RedisConnectionError("Connection refused"))
    assert redis_state.is_outage(RedisTimeoutError("Timeout reading from socket"))
    assert redis_state.is_outage(ConnectionResetError())
