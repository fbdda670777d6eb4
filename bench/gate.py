"""What the limits gate (billing/limits.py) costs per request: admit + settle.

    python bench/gate.py [--calls 5000] [--concurrency 32] [--redis redis://127.0.0.1:6379/0]

For each backend (LocalLimiter in-process; RedisLimiter, one Lua script per call, on the
given Redis - RBEE_REDIS_URL or 127.0.0.1 by default) and each limits profile:

* none  - no limits (only the daily usage counters and the concurrency lease are written);
* all   - all eight limits set, high enough never to refuse (windows of one or two buckets);
* full  - all eight limits, the clock injected so that every call sees a full 61-bucket
          per-minute window (the worst case for the sliding log);

it times ``--calls`` sequential admit+settle pairs (p50 / p99 of the pair, and p50 of each
half), then runs the same number of pairs from ``--concurrency`` tasks and reports pairs/s.
The load generator shares the machine's cores with Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing.limits import Cost, Limiter, Limits, LocalLimiter, RedisLimiter  # noqa: E402

BIG = 10**12
ALL = Limits(
    requests_per_minute=BIG,
    tokens_per_minute=BIG,
    max_concurrent=BIG,
    requests_per_day=BIG,
    tokens_per_day=BIG,
    images_per_day=BIG,
    audio_seconds_per_day=BIG,
    characters_per_day=BIG,
)
PROFILES = {"none": Limits(), "all": ALL, "full": ALL}
RESERVE = Cost(tokens=300)
ACTUAL = Cost(tokens=120)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def clock(profile: str, calls: int):  # type: ignore[no-untyped-def]
    """None (the real clock) or an injected clock spreading the calls over 61 seconds."""
    if profile != "full":
        return lambda i: None
    base = time.time()
    step = 61.0 / calls
    return lambda i: base + i * step


async def sequential(
    lim: Limiter, tenant: str, limits: Limits, calls: int, profile: str
) -> tuple[list[float], list[float], list[float]]:
    now = clock(profile, calls)
    pair, admit, settle = [], [], []
    for i in range(calls):
        t0 = time.perf_counter()
        d = await lim.admit(tenant, limits, RESERVE, now=now(i))
        t1 = time.perf_counter()
        assert d.allowed, d
        await lim.settle(tenant, d.ticket, ACTUAL, now=now(i))
        t2 = time.perf_counter()
        pair.append(t2 - t0)
        admit.append(t1 - t0)
        settle.append(t2 - t1)
    return pair, admit, settle


async def concurrent(
    lim: Limiter, tenant: str, limits: Limits, calls: int, tasks: int, profile: str
) -> float:
    now = clock(profile, calls)
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            d = await lim.admit(tenant, limits, RESERVE, now=now(i))
            assert d.allowed, d
            await lim.settle(tenant, d.ticket, ACTUAL, now=now(i))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return calls / (time.perf_counter() - t0)


async def run(args: argparse.Namespace) -> None:
    backends: list[tuple[str, Limiter]] = [("local", LocalLimiter())]
    redis_lim: RedisLimiter | None = None
    if args.redis:
        redis_lim = RedisLimiter(
            args.redis, prefix=f"rbee:bench:{uuid.uuid4().hex[:8]}", max_connections=args.pool
        )
        try:
            await redis_lim.usage("probe")
            backends.append(("redis", redis_lim))
        except Exception as exc:
            print(f"(no Redis at {args.redis}: {exc}; local only)")
    print(
        f"admit+settle per request: {args.calls} sequential pairs; then {args.calls} pairs "
        f"from {args.concurrency} tasks\n"
    )
    print(
        f"{'backend':8} {'limits':6} | {'pair p50':>9} {'pair p99':>9} {'admit p50':>10} "
        f"{'settle p50':>11} | {'pairs/s x1':>10} {'pairs/s x' + str(args.concurrency):>11}"
    )
    for name, lim in backends:
        for profile, limits in PROFILES.items():
            tenant = f"bench-{profile}-{uuid.uuid4().hex[:6]}"
            await sequential(lim, tenant, limits, min(200, args.calls), profile)  # warm up
            await lim.reset(tenant)
            pair, admit, settle = await sequential(lim, tenant, limits, args.calls, profile)
            await lim.reset(tenant)
            rate = await concurrent(lim, tenant, limits, args.calls, args.concurrency, profile)
            await lim.reset(tenant)
            us = 1e6
            print(
                f"{name:8} {profile:6} | {statistics.median(pair) * us:7.0f}us "
                f"{pct(pair, 99) * us:7.0f}us {statistics.median(admit) * us:8.0f}us "
                f"{statistics.median(settle) * us:9.0f}us | {1 / statistics.mean(pair):10.0f} "
                f"{rate:11.0f}"
            )
    if redis_lim is not None:
        await redis_lim.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--pool", type=int, default=32, help="Redis connections per event loop")
    ap.add_argument(
        "--redis",
        default=os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="Redis URL ('' for the local backend only)",
    )
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
