"""billing/limits.py: exact rate limits and quotas on both backends.

Every semantic test runs against the LocalLimiter and the RedisLimiter (skipped when no
Redis answers at RBEE_REDIS_URL or redis://127.0.0.1:6379/0). Each Redis test uses its own
key prefix and deletes it afterwards. Times are injected (``now=``) so windows and days are
deterministic; T0 is 10 seconds into a UTC day.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from billing.limits import (
    DAY_S,
    LEASE_S,
    Cost,
    Limits,
    LocalLimiter,
    RedisLimiter,
    _Script,
    format_duration,
    get_limiter,
)

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0"
T0 = 20_000 * DAY_S + 10.25  # 10.25 s after midnight UTC
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def _redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


# CI starts Redis (.ci/run): there its absence is a failure, not a skip.
HAVE_REDIS = _redis_available() or bool(os.environ.get("CI"))
needs_redis = pytest.mark.skipif(not HAVE_REDIS, reason=f"no Redis at {REDIS_URL}")


def _drop_prefix(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"rbee:test:lim:{uuid.uuid4().hex[:12]}"
    yield p
    if HAVE_REDIS:
        _drop_prefix(p)


@pytest.fixture(params=["local", pytest.param("redis", marks=needs_redis)])
async def limiter(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[object]:
    if request.param == "local":
        yield LocalLimiter()
        return
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    try:
        yield lim
    finally:
        await lim.aclose()


def tenant() -> str:
    return f"acme-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- exactness


async def test_exact_admission_under_gather(limiter) -> None:
    t = tenant()
    limits = Limits(requests_per_day=50)
    decisions = await asyncio.gather(
        *(limiter.admit(t, limits, Cost(), now=T0) for _ in range(200))
    )
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 50
    assert len({d.ticket for d in allowed}) == 50
    refused = [d for d in decisions if not d.allowed]
    assert {d.reason for d in refused} == {"quota_requests"}
    assert all(d.ticket == "" for d in refused)
    # Until midnight UTC.
    assert refused[0].retry_after == pytest.approx(DAY_S - 10.25)
    assert (await limiter.usage(t, now=T0))["requests"] == 50
    # The next UTC day starts from zero.
    nxt = await limiter.admit(t, limits, Cost(), now=T0 + DAY_S)
    assert nxt.allowed and nxt.usage_today["requests"] == 1


def test_local_exact_across_threads() -> None:
    """The local backend's lock also holds when several threads each run an event loop."""
    lim = LocalLimiter()
    limits = Limits(requests_per_day=50, max_concurrent=1000)
    counts: list[int] = []

    def worker() -> None:
        async def go() -> int:
            ds = await asyncio.gather(*(lim.admit("t", limits, Cost()) for _ in range(100)))
            return sum(d.allowed for d in ds)

        counts.append(asyncio.run(go()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(counts) == 50


async def test_token_quota_settle_gives_back_and_overshoot_is_bounded(limiter) -> None:
    t = tenant()
    limits = Limits(tokens_per_day=1000)
    ds = [await limiter.admit(t, limits, Cost(tokens=300), now=T0) for _ in range(4)]
    assert [d.allowed for d in ds] == [True, True, True, False]
    assert ds[3].reason == "quota_tokens"
    assert ds[2].usage_today["tokens"] == 900
    # Reserved 300, used 120: 180 come back.
    await limiter.settle(t, ds[0].ticket, Cost(tokens=120), now=T0 + 1)
    assert (await limiter.usage(t, now=T0 + 1))["tokens"] == 720
    d = await limiter.admit(t, limits, Cost(tokens=300), now=T0 + 2)
    assert not d.allowed  # 720 + 300 > 1000
    d = await limiter.admit(t, limits, Cost(tokens=280), now=T0 + 2)
    assert d.allowed and d.usage_today["tokens"] == 1000

    # Every request uses 250 more than it reserved: the quota is overshot by at most the
    # last admitted request's excess.
    t2 = tenant()
    n = 0
    while True:
        d = await limiter.admit(t2, limits, Cost(tokens=100), now=T0 + n)
        if not d.allowed:
            break
        await limiter.settle(t2, d.ticket, Cost(tokens=350), now=T0 + n)
        n += 1
    used = (await limiter.usage(t2, now=T0 + n))["tokens"]
    assert n == 3 and used == 1050
    assert used <= 1000 + (350 - 100)
    assert d.reason == "quota_tokens"
    # A request that costs no tokens (an image) is not blocked by the token quota...
    assert (await limiter.admit(t2, limits, Cost(images=1), now=T0 + n)).allowed
    # ...but any request that costs tokens is, since the tenant is over.
    assert not (await limiter.admit(t2, limits, Cost(tokens=1), now=T0 + n)).allowed


async def test_audio_seconds_are_exact_floats(limiter) -> None:
    t = tenant()
    limits = Limits(audio_seconds_per_day=5)
    a = await limiter.admit(t, limits, Cost(audio_seconds=1.5), now=T0)
    b = await limiter.admit(t, limits, Cost(audio_seconds=2.25), now=T0)
    assert a.allowed and b.allowed and b.usage_today["audio_seconds"] == 3.75
    c = await limiter.admit(t, limits, Cost(audio_seconds=1.3), now=T0)
    assert not c.allowed and c.reason == "quota_audio_seconds"
    await limiter.settle(t, a.ticket, Cost(audio_seconds=0.1), now=T0)
    assert (await limiter.usage(t, now=T0))["audio_seconds"] == pytest.approx(2.35)
    assert (await limiter.admit(t, limits, Cost(audio_seconds=2.65), now=T0)).allowed


# --------------------------------------------------------------------------- per-minute windows


async def test_sliding_window_blocks_and_recovers(limiter) -> None:
    t = tenant()
    limits = Limits(requests_per_minute=3)
    for dt in (0, 10, 20):
        assert (await limiter.admit(t, limits, Cost(), now=T0 + dt)).allowed
    d = await limiter.admit(t, limits, Cost(), now=T0 + 30)
    assert not d.allowed and d.reason == "rate_limit_requests"
    # The first request (second floor(T0)) counts until floor(T0) + 61.
    first_free = math.floor(T0) + 61
    assert d.retry_after == pytest.approx(first_free - (T0 + 30))
    assert not (await limiter.admit(t, limits, Cost(), now=first_free - 0.01)).allowed
    assert (await limiter.admit(t, limits, Cost(), now=first_free)).allowed
    # Full again until the request of T0+10 ages out.
    assert not (await limiter.admit(t, limits, Cost(), now=first_free + 1)).allowed
    assert (await limiter.admit(t, limits, Cost(), now=first_free + 10)).allowed


async def test_window_cannot_be_gamed_at_a_minute_boundary(limiter) -> None:
    t = tenant()
    limits = Limits(requests_per_minute=5)
    minute_end = 20_000 * DAY_S + 120  # a whole minute
    for _ in range(5):
        assert (await limiter.admit(t, limits, Cost(), now=minute_end - 0.1)).allowed
    # A fixed-window counter would start afresh here.
    assert not (await limiter.admit(t, limits, Cost(), now=minute_end + 0.1)).allowed
    assert not (await limiter.admit(t, limits, Cost(), now=minute_end + 59.5)).allowed
    assert (await limiter.admit(t, limits, Cost(), now=minute_end + 60)).allowed


async def test_window_never_exceeds_limit_in_any_60s(limiter) -> None:
    """Random arrivals: for every admitted request, the admitted ones in the 60 s before it
    (inclusive) never exceed the limit - the property a weighted two-window estimate lacks."""
    t = tenant()
    limit = 7
    limits = Limits(requests_per_minute=limit)
    rng = random.Random(1234)
    now = T0
    admitted: list[float] = []
    for _ in range(400):
        now += rng.expovariate(1 / 3.0)
        if (await limiter.admit(t, limits, Cost(), now=now)).allowed:
            admitted.append(now)
    assert len(admitted) > 4 * limit
    for i, a in enumerate(admitted):
        assert sum(1 for b in admitted[: i + 1] if a - 60 < b <= a) <= limit


async def test_tokens_per_minute_reserved_then_corrected(limiter) -> None:
    t = tenant()
    limits = Limits(tokens_per_minute=1000)
    a = await limiter.admit(t, limits, Cost(tokens=600), now=T0)
    assert a.allowed
    b = await limiter.admit(t, limits, Cost(tokens=600), now=T0 + 1)
    assert not b.allowed and b.reason == "rate_limit_tokens"
    assert b.retry_after == pytest.approx(math.floor(T0) + 61 - (T0 + 1))
    await limiter.settle(t, a.ticket, Cost(tokens=100), now=T0 + 2)
    c = await limiter.admit(t, limits, Cost(tokens=600), now=T0 + 3)
    assert c.allowed and c.headers["x-ratelimit-remaining-tokens"] == "300"
    # A reservation above the whole per-minute limit can never pass.
    d = await limiter.admit(t, limits, Cost(tokens=5000), now=T0 + 3)
    assert not d.allowed and d.reason == "rate_limit_tokens"


# --------------------------------------------------------------------------- concurrency


async def test_concurrency_limit_and_settle_releases(limiter) -> None:
    t = tenant()
    limits = Limits(max_concurrent=2)
    a = await limiter.admit(t, limits, Cost(), now=T0)
    b = await limiter.admit(t, limits, Cost(), now=T0)
    c = await limiter.admit(t, limits, Cost(), now=T0)
    assert a.allowed and b.allowed and not c.allowed
    assert c.reason == "concurrency" and c.retry_after == pytest.approx(1.0)
    await limiter.settle(t, a.ticket, Cost(), now=T0 + 1)
    assert (await limiter.admit(t, limits, Cost(), now=T0 + 1)).allowed
    assert not (await limiter.admit(t, limits, Cost(), now=T0 + 1)).allowed


async def test_concurrency_under_gather(limiter) -> None:
    t = tenant()
    limits = Limits(max_concurrent=10)
    ds = await asyncio.gather(*(limiter.admit(t, limits, Cost(), now=T0) for _ in range(100)))
    assert sum(d.allowed for d in ds) == 10


async def test_expired_concurrency_tickets_are_freed(limiter) -> None:
    t = tenant()
    limits = Limits(max_concurrent=1)
    crashed = await limiter.admit(t, limits, Cost(tokens=300), now=T0)
    assert crashed.allowed
    assert not (await limiter.admit(t, limits, Cost(), now=T0 + LEASE_S - 1)).allowed
    fresh = await limiter.admit(t, limits, Cost(), now=T0 + LEASE_S + 0.5)
    assert fresh.allowed
    # A late settle of the expired ticket still corrects the tokens and does not free the
    # new request's slot.
    await limiter.settle(t, crashed.ticket, Cost(tokens=50), now=T0 + LEASE_S + 1)
    assert (await limiter.usage(t, now=T0 + LEASE_S + 1))["tokens"] == 50
    assert not (await limiter.admit(t, limits, Cost(), now=T0 + LEASE_S + 1)).allowed


async def test_a_renewed_ticket_keeps_its_slot_past_the_lease(limiter) -> None:
    t = tenant()
    limits = Limits(max_concurrent=1)
    running = await limiter.admit(t, limits, Cost(), now=T0)
    # A long job renews its lease before it runs out, again and again.
    for k in range(1, 4):
        assert await limiter.renew(t, running.ticket, now=T0 + k * (LEASE_S - 1))
    later = T0 + 3 * (LEASE_S - 1) + LEASE_S - 1
    assert not (await limiter.admit(t, limits, Cost(), now=later)).allowed
    await limiter.settle(t, running.ticket, Cost(), now=later)
    # A settled (or unknown) ticket is not renewed: it would hold a slot for nothing.
    assert not await limiter.renew(t, running.ticket, now=later)
    assert not await limiter.renew(t, "no-such-ticket", now=later)
    assert (await limiter.admit(t, limits, Cost(), now=later)).allowed


# --------------------------------------------------------------------------- all or nothing


async def test_failed_check_reserves_nothing(limiter) -> None:
    t = tenant()
    limits = Limits(
        requests_per_minute=5,
        tokens_per_minute=100,
        max_concurrent=1,
        requests_per_day=10,
        images_per_day=2,
    )
    d = await limiter.admit(t, limits, Cost(images=3), now=T0)
    assert not d.allowed and d.reason == "quota_images"
    d = await limiter.admit(t, limits, Cost(tokens=200), now=T0)
    assert not d.allowed and d.reason == "rate_limit_tokens"
    assert await limiter.usage(t, now=T0) == {
        "requests": 0.0,
        "tokens": 0.0,
        "images": 0.0,
        "audio_seconds": 0.0,
        "characters": 0.0,
    }
    # No request, token or concurrency slot was taken by the refusals.
    ok = await limiter.admit(t, limits, Cost(tokens=100, images=2), now=T0)
    assert ok.allowed
    assert ok.headers["x-ratelimit-remaining-requests"] == "4"
    assert ok.headers["x-ratelimit-remaining-tokens"] == "0"
    assert ok.usage_today == {
        "requests": 1.0,
        "tokens": 100.0,
        "images": 2.0,
        "audio_seconds": 0.0,
        "characters": 0.0,
    }


async def test_longest_wait_is_reported(limiter) -> None:
    t = tenant()
    limits = Limits(requests_per_minute=1, requests_per_day=1)
    assert (await limiter.admit(t, limits, Cost(), now=T0)).allowed
    d = await limiter.admit(t, limits, Cost(), now=T0 + 5)
    # Both fail; a retry can only pass after midnight.
    assert d.reason == "quota_requests"
    assert d.retry_after == pytest.approx(DAY_S - 15.25)


# --------------------------------------------------------------------------- headers


async def test_headers_present_and_consistent(limiter) -> None:
    t = tenant()
    limits = Limits(requests_per_minute=5, tokens_per_minute=1000)
    remaining_req, remaining_tok = [], []
    for i in range(5):
        d = await limiter.admit(t, limits, Cost(tokens=150), now=T0 + i)
        assert d.allowed
        h = d.headers
        assert h["x-ratelimit-limit-requests"] == "5"
        assert h["x-ratelimit-limit-tokens"] == "1000"
        assert DURATION.match(h["x-ratelimit-reset-requests"])
        assert DURATION.match(h["x-ratelimit-reset-tokens"])
        remaining_req.append(int(h["x-ratelimit-remaining-requests"]))
        remaining_tok.append(int(h["x-ratelimit-remaining-tokens"]))
    assert remaining_req == [4, 3, 2, 1, 0]
    assert remaining_tok == [850, 700, 550, 400, 250]
    d = await limiter.admit(t, limits, Cost(tokens=150), now=T0 + 5)
    assert not d.allowed
    assert d.headers["x-ratelimit-remaining-requests"] == "0"
    assert d.headers["x-ratelimit-remaining-tokens"] == "250"
    # The window is fully reset when the newest request (second floor(T0)+4) ages out.
    assert d.headers["x-ratelimit-reset-requests"] == format_duration(
        math.floor(T0) + 4 + 61 - (T0 + 5)
    )
    # No per-minute limits, no headers.
    plain = await limiter.admit(tenant(), Limits(requests_per_day=3), Cost(), now=T0)
    assert plain.allowed and plain.headers == {}


def test_format_duration() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(0.02) == "20ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(60.8) == "1m0.8s"
    assert format_duration(3725) == "1h2m5s"
    assert format_duration(-3) == "0s"


# --------------------------------------------------------------------------- settle


async def test_settle_is_idempotent(limiter) -> None:
    t = tenant()
    limits = Limits(max_concurrent=2, tokens_per_day=10_000)
    a = await limiter.admit(t, limits, Cost(tokens=300), now=T0)
    b = await limiter.admit(t, limits, Cost(tokens=300), now=T0)
    for _ in range(3):
        await limiter.settle(t, a.ticket, Cost(tokens=100), now=T0 + 1)
    assert (await limiter.usage(t, now=T0 + 1))["tokens"] == 400
    await limiter.settle(t, "no-such-ticket", Cost(tokens=100), now=T0 + 1)
    await limiter.settle(t, "", Cost(tokens=100), now=T0 + 1)
    await limiter.settle("never-seen", "x", Cost(), now=T0 + 1)
    # Only a's slot was freed, once: b still holds the other.
    assert (await limiter.admit(t, limits, Cost(), now=T0 + 1)).allowed
    assert not (await limiter.admit(t, limits, Cost(), now=T0 + 1)).allowed
    await limiter.settle(t, b.ticket, Cost(tokens=300), now=T0 + 2)
    assert (await limiter.usage(t, now=T0 + 2))["tokens"] == 400


async def test_a_final_settle_after_an_interim_one_corrects_it_once(limiter) -> None:
    """The usage settler settles a request it judged dead with its heartbeat counts
    (interim); when the request was alive after all, its final settle replaces those
    counts by the real ones, once; the slot it still uses comes back with its next renew."""
    t = tenant()
    limits = Limits(max_concurrent=1, tokens_per_day=10_000, tokens_per_minute=10_000)
    a = await limiter.admit(t, limits, Cost(tokens=800), now=T0)
    await limiter.settle(t, a.ticket, Cost(tokens=50), now=T0 + 1, interim=True)
    assert (await limiter.usage(t, now=T0 + 1))["tokens"] == 50
    # Another settler's interim settle of the same ticket changes nothing.
    await limiter.settle(t, a.ticket, Cost(tokens=7), now=T0 + 1, interim=True)
    assert (await limiter.usage(t, now=T0 + 1))["tokens"] == 50
    # The request still runs: its heartbeat's renew holds its slot again.
    assert await limiter.renew(t, a.ticket, now=T0 + 2)
    assert not (await limiter.admit(t, limits, Cost(), now=T0 + 2)).allowed
    # Its final figures replace the heartbeat's, in the day and the minute window, once.
    await limiter.settle(t, a.ticket, Cost(tokens=120), now=T0 + 3)
    await limiter.settle(t, a.ticket, Cost(tokens=999), now=T0 + 3)
    await limiter.settle(t, a.ticket, Cost(tokens=5), now=T0 + 3, interim=True)
    used = await limiter.usage(t, now=T0 + 3)
    assert (used["requests"], used["tokens"]) == (1, 120)
    assert not await limiter.renew(t, a.ticket, now=T0 + 3)
    assert not (await limiter.admit(t, limits, Cost(tokens=9_881), now=T0 + 3)).allowed
    assert (await limiter.admit(t, limits, Cost(tokens=9_880), now=T0 + 3)).allowed


async def test_an_interim_settle_after_the_final_one_changes_nothing(limiter) -> None:
    t = tenant()
    limits = Limits(max_concurrent=1, tokens_per_day=10_000)
    a = await limiter.admit(t, limits, Cost(tokens=800), now=T0)
    await limiter.settle(t, a.ticket, Cost(tokens=120), now=T0 + 1)
    await limiter.settle(t, a.ticket, Cost(tokens=50), now=T0 + 2, interim=True)
    assert (await limiter.usage(t, now=T0 + 2))["tokens"] == 120
    assert (await limiter.admit(t, limits, Cost(), now=T0 + 2)).allowed


async def test_reset_forgets_the_tenant(limiter) -> None:
    t = tenant()
    limits = Limits(requests_per_day=1, requests_per_minute=1, max_concurrent=1)
    assert (await limiter.admit(t, limits, Cost(), now=T0)).allowed
    assert not (await limiter.admit(t, limits, Cost(), now=T0)).allowed
    await limiter.reset(t)
    assert (await limiter.usage(t, now=T0))["requests"] == 0
    assert (await limiter.admit(t, limits, Cost(), now=T0)).allowed


async def test_real_clock(limiter) -> None:
    """Without ``now`` the Redis backend uses the server's clock and the local one time()."""
    t = tenant()
    d = await limiter.admit(t, Limits(requests_per_minute=2, requests_per_day=5), Cost())
    assert d.allowed and d.usage_today["requests"] == 1
    assert d.headers["x-ratelimit-remaining-requests"] == "1"
    await limiter.settle(t, d.ticket, Cost())
    assert (await limiter.usage(t))["requests"] == 1


def test_invalid_values() -> None:
    with pytest.raises(ValueError):
        Limits(requests_per_day=-1)
    with pytest.raises(ValueError):
        Cost(tokens=-5)
    with pytest.raises(ValueError):
        Cost(audio_seconds=float("nan"))
    assert Limits.from_mapping({"tokens_per_day": 5, "allowed_models": []}) == Limits(
        tokens_per_day=5
    )


# --------------------------------------------------------------------------- Redis only


@needs_redis
async def test_redis_noscript_falls_back_to_eval(prefix: str) -> None:
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    # A source the server has never seen: EVALSHA answers NOSCRIPT, EVAL runs it.
    lim._admit = _Script(RedisLimiter._admit.source + f"\n-- {uuid.uuid4().hex}\n")  # type: ignore[misc]
    try:
        d = await lim.admit("t", Limits(requests_per_day=1), Cost(), now=T0)
        assert d.allowed
        # Now cached on the server: EVALSHA succeeds.
        assert await lim._client().script_exists(lim._admit.sha) == [True]
        assert not (await lim.admit("t", Limits(requests_per_day=1), Cost(), now=T0)).allowed
    finally:
        await lim.aclose()


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from billing.limits import Cost, Limits, RedisLimiter

    url, prefix, tenant, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    async def main():
        lim = RedisLimiter(url, prefix=prefix)
        limits = Limits(requests_per_day=50)
        # Open the connections first so every process fires at the same moment.
        await asyncio.gather(*(lim._client().ping() for _ in range(100)))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        ds = await asyncio.gather(*(lim.admit(tenant, limits, Cost()) for _ in range(100)))
        await lim.aclose()
        return sum(d.allowed for d in ds)

    print(json.dumps({"allowed": asyncio.run(main())}))
    """
)


@needs_redis
@pytest.mark.parametrize("processes", [2, 4])
async def test_redis_exact_across_processes(prefix: str, processes: int) -> None:
    t = tenant()
    start_at = time.time() + 3.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            REDIS_URL,
            prefix,
            t,
            str(start_at),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    counts = []
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()
        counts.append(json.loads(out)["allowed"])
    assert sum(counts) == 50
    lim = RedisLimiter(REDIS_URL, prefix=prefix)
    try:
        assert (await lim.usage(t))["requests"] == 50
    finally:
        await lim.aclose()


# --------------------------------------------------------------------------- get_limiter


def test_get_limiter_local_by_default(settings) -> None:
    settings.REDIS_URL = ""
    lim = get_limiter()
    assert isinstance(lim, LocalLimiter)
    assert get_limiter() is lim


@needs_redis
def test_get_limiter_redis_one_client_per_loop(settings, prefix: str) -> None:
    settings.REDIS_URL = REDIS_URL
    lim = get_limiter()
    assert isinstance(lim, RedisLimiter) and get_limiter() is lim
    # Use a private instance for the writes so the shared one's prefix is untouched.
    mine = RedisLimiter(REDIS_URL, prefix=prefix)
    limits = Limits(requests_per_day=3)

    async def once() -> bool:
        try:
            return (await mine.admit("t", limits, Cost(), now=T0)).allowed
        finally:
            await mine.aclose()

    # Several event loops in turn, each gets its own client.
    assert [asyncio.run(once()) for _ in range(4)] == [True, True, True, False]

    async def ping() -> bool:
        assert isinstance(lim, RedisLimiter)
        try:
            return bool(await lim._client().ping())
        finally:
            await lim.aclose()

    assert asyncio.run(ping()) and asyncio.run(ping())
