"""What the queen adds per request: rbee versus the same engine called directly.

    python bench/overhead.py [--requests N] [--concurrency 1,16,64]

Starts a real queen and a real hive serving the built-in echo engine (answers at
once), on the embedded default or, when RBEE_DATABASE_URL / RBEE_REDIS_URL are
set, on PostgreSQL + Redis. The baseline is the same echo engine behind a bare
ASGI app on Daphne (bench/direct_app.py), reached by the same HTTP client; a
second baseline is the engine called in-process. Prints p50/p99 latency and
requests/s at each concurrency, non-streaming and streaming.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.live import Deployment, Hive, Queen, free_port, stop_process  # noqa: E402

MODEL = "echo-bench"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "one two three four five six"}]}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def load(
    url: str,
    key: str | None,
    concurrency: int,
    total: int,
    stream: bool,
    body: dict[str, Any] | None = None,
) -> tuple[list[float], float, int]:
    """Latencies (s), requests/s and errors of `total` requests (`body`, default the echo
    one) from `concurrency` clients."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {**(body or BODY), "stream": stream}
    latencies: list[float] = []
    errors = 0
    per_client = max(1, total // concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:

        async def one() -> None:
            nonlocal errors
            t = time.perf_counter()
            if stream:
                async with client.stream("POST", url, json=body) as r:
                    async for line in r.aiter_lines():
                        if line == "data: [DONE]":
                            break
                    ok = r.status_code == 200
            else:
                r = await client.post(url, json=body)
                ok = r.status_code == 200
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1

        async def worker() -> None:
            for _ in range(per_client):
                await one()

        for _ in range(min(concurrency, 8)):  # warm connections and caches
            await one()
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, len(latencies) / elapsed, errors


def in_process(n: int = 20000) -> float:
    from hives.agent.engines.echo import EchoEngine
    from hives.spec import ModelSpec

    eng = EchoEngine()
    eng.load(ModelSpec(name=MODEL, engine="echo", source=""))
    t = time.perf_counter()
    for _ in range(n):
        list(eng.chat(BODY, lambda: False))
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400, help="requests per row")
    ap.add_argument("--concurrency", default="1,16,64")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    mode = "PostgreSQL + Redis" if os.environ.get("RBEE_DATABASE_URL") else "embedded default"
    dep = Deployment()
    direct_port = free_port()
    direct = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(direct_port),
            "bench.direct_app:app",
        ],
        cwd=ROOT,
        env={**dep.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        queen = Queen(dep)
        Hive(dep, queen, "bench-hive", [f"{MODEL}=echo:"])
        dep.rbee("tenant", "create", "bench")
        key = dep.rbee("key", "create", "--tenant", "bench").stdout.strip()
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{direct_port}/v1/chat/completions", json=BODY)
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        print(
            f"rbee queen overhead ({mode}); echo engine in-process: "
            f"{in_process() * 1e6:.1f} us per call\n"
        )
        print(
            f"{'mode':10} {'clients':>7} | {'direct p50':>10} {'p99':>7} {'req/s':>7} | "
            f"{'rbee p50':>9} {'p99':>7} {'req/s':>7} {'err':>4} | {'added p50':>9}"
        )
        for stream in (False, True):
            for c in levels:
                total = max(args.requests, c * 4)
                d_lat, d_rps, _ = asyncio.run(
                    load(
                        f"http://127.0.0.1:{direct_port}/v1/chat/completions",
                        None,
                        c,
                        total,
                        stream,
                    )
                )
                r_lat, r_rps, r_err = asyncio.run(
                    load(f"{queen.url}/v1/chat/completions", key, c, total, stream)
                )
                d50, r50 = statistics.median(d_lat), statistics.median(r_lat)
                print(
                    f"{'stream' if stream else 'json':10} {c:7d} | {d50 * 1e3:8.2f}ms "
                    f"{pct(d_lat, 99) * 1e3:5.1f}ms {d_rps:7.0f} | {r50 * 1e3:7.2f}ms "
                    f"{pct(r_lat, 99) * 1e3:5.1f}ms {r_rps:7.0f} {r_err:4d} | "
                    f"{(r50 - d50) * 1e3:7.2f}ms",
                    flush=True,
                )
    finally:
        stop_process(direct)
        dep.close()


if __name__ == "__main__":
    main()
