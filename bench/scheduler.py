"""What the owner's scheduler script costs: per decision, and on the queen's request path.

    python bench/scheduler.py [--iterations N] [--seconds S] [--workers 10,100,1000]
                              [--requests N] [--concurrency 1,16]

1. Admission + routing per request, in-process, with the seed scripts of the product
   documents (testkit/seed_scheduler_scripts.rhai): `Policy.admit` then
   `Policy.route`, timed together, over 10, 100 and 1,000 workers built by repeating the
   recorded machines (tests/fixtures/machines/). The consumer script (should_admit with
   queue_depth + route_task) decides an image-gen task, a 70b and an 8b text task; the
   business script (route_task only) an enterprise-tier and a free-tier task. The default
   policy alone (`Policy("")`, least loaded in Python) is the comparison row.
2. A real queen and one hive serving the echo engine (answers at once), requests/s and
   latency with no script and with the consumer script in force (its least_loaded path
   decides: the model is echo-bench, neither 70b nor 8b), then with the same script minus
   its should_admit. The consumer script rejects (429) once the queue holds more than 10
   requests, so with 16 clients some answers are 429s, counted apart: req/s and latency are
   of the 200s.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")
os.environ.setdefault("RBEE_HOME", tempfile.mkdtemp(prefix="rbee-bench-"))

import django  # noqa: E402

django.setup()

from hives.selectors import Placement  # noqa: E402
from inference.scheduler import Decision, Policy, task_map  # noqa: E402
from testkit.live import Deployment, Hive, Queen  # noqa: E402
from testkit.scheduler import placements, seed_scripts  # noqa: E402

MODEL = "echo-bench"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "one two three four five six"}]}

# (recorded machine, hive name, gpu type override): one "rack" of the farm, 6 workers
# (the old server has two GPUs).
# The DGX fixture is recorded as H100; a second copy relabelled A100 gives the business
# script's free tier something to pick.
RACK = (
    ("gaming-pc-rtx4090", "gaming-pc", None),
    ("mac-studio-m2-ultra", "mac-studio", None),
    ("old-server-2x3090", "old-server", None),
    ("dgx-h100", "dgx", None),
    ("dgx-h100", "cloud-a100", "A100"),
)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def farm(n: int) -> list[Placement]:
    """n workers: the rack repeated. Rack k > 0 names its hives `<name>-<k>` (hive names are
    unique in a deployment), so the consumer script's hive filters scan all n workers and
    match rack 0's; the gpu_type filters (business script) match one worker per rack.
    inflight varies so least_loaded has to compare."""
    out: list[Placement] = []
    rack = 0
    while len(out) < n:
        for h, (machine, hive, gpu) in enumerate(RACK):
            name = hive if rack == 0 else f"{hive}-{rack}"
            for p in placements(machine, name, "", first_id=len(out) + 1):
                out.append(
                    dataclasses.replace(
                        p,
                        worker_id=len(out) + 1,
                        hive_id=rack * len(RACK) + h + 1,
                        gpu_type=gpu or p.gpu_type,
                        inflight=(len(out) * 7 + 3) % 5,
                    )
                )
        rack += 1
    return out[:n]


def task(kind: str, model: str, tier: str = "pro") -> dict[str, Any]:
    return task_map(
        type=kind,
        model=model,
        priority="interactive",
        tier=tier,
        tenant="bench",
        region="",
        size=100,
    )


def time_decision(
    policy: Policy,
    t: dict[str, Any],
    workers: list[Placement],
    iterations: int,
    seconds: float,
) -> tuple[list[float], Decision]:
    """Microseconds per admit + route, for `iterations` calls or `seconds`, whichever first
    (at least 50 calls)."""
    customer = {
        "tenant": "bench",
        "tier": t["customer_tier"],
        "tokens_used_today": 0,
        "daily_limit": 100_000,
        "queue_depth": 3,
    }
    load = {p.worker_id: p.worker_id % 3 for p in workers[::4]}
    clock = time.perf_counter_ns
    samples: list[float] = []
    decision = policy.route(t, workers, load)  # warm
    deadline = time.perf_counter() + seconds
    for i in range(iterations):
        t0 = clock()
        admission = policy.admit(t, customer)
        decision = policy.route(t, workers, load)
        samples.append((clock() - t0) / 1000.0)
        if not admission.admitted:
            raise AssertionError(f"not admitted: {admission}")
        if i >= 50 and time.perf_counter() > deadline:
            break
    return samples, decision


def decision_costs(sizes: list[int], iterations: int, seconds: float) -> None:
    seeds = seed_scripts()
    consumer, business = Policy(seeds[0]), Policy(seeds[5])
    default = Policy("")
    cases: list[tuple[str, Policy, dict[str, Any], str]] = [
        ("consumer: admit + image-gen", consumer, task("image-gen", "sdxl"), "script"),
        ("consumer: admit + text 70b", consumer, task("text-gen", "llama-3-70b"), "script"),
        ("consumer: admit + text 8b", consumer, task("text-gen", "llama-3-8b"), "script"),
        (
            "business: enterprise tier",
            business,
            task("text-gen", "llama-3-405b", "enterprise"),
            "script",
        ),
        ("business: free tier", business, task("text-gen", "llama-3-405b", "free"), "script"),
        ('default policy: Policy("")', default, task("text-gen", "llama-3-8b"), "default"),
    ]
    print(
        "1. Admission + routing per request, in-process (Policy.admit + Policy.route, "
        "microseconds)\n"
    )
    print(
        f"{'case':30} {'workers':>7} | {'median us':>9} {'p99 us':>9} {'calls':>6} | "
        f"{'decided by':10} chose"
    )
    for n in sizes:
        workers = farm(n)
        for label, policy, t, expected in cases:
            ws = [dataclasses.replace(p, model=t["model"], capability=t["type"]) for p in workers]
            samples, d = time_decision(policy, t, ws, iterations, seconds)
            if d.source != expected:
                raise AssertionError(f"{label} at {n}: decided by {d.source}, not {expected}")
            chose = f"{d.placement.hive_name}/{d.placement.device} {d.placement.gpu_type}"
            print(
                f"{label:30} {n:7d} | {statistics.median(samples):9.1f} "
                f"{pct(samples, 99):9.1f} {len(samples):6d} | {d.source:10} {chose}",
                flush=True,
            )
        print()


async def load(
    url: str, key: str, concurrency: int, total: int
) -> tuple[list[float], float, int, Counter[str]]:
    """Latencies of the 200s (s), their requests/s, non-200 count, and what was seen: the
    x-rbee-decision of each 200, the status of each other answer."""
    latencies: list[float] = []
    decisions: Counter[str] = Counter()
    errors = 0
    per_client = max(1, total // concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}

    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:

        async def one() -> None:
            nonlocal errors
            t = time.perf_counter()
            r = await client.post(url, json=BODY)
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t)
                decisions[r.headers.get("x-rbee-decision", "?")] += 1
            else:
                errors += 1
                decisions[f"HTTP {r.status_code}"] += 1

        async def worker() -> None:
            for _ in range(per_client):
                await one()

        for _ in range(min(concurrency, 8)):  # warm connections and caches
            await one()
        latencies.clear()
        decisions.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, len(latencies) / elapsed, errors, decisions  # 200s per second


def wait_for_decision(url: str, key: str, want: str, timeout: float = 15) -> str:
    """POST until the queen answers with x-rbee-decision == want; returns what it said."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        r = httpx.post(url, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        if r.status_code != 200:
            raise AssertionError(f"{r.status_code}: {r.text}")
        seen = r.headers.get("x-rbee-decision", "")
        if seen == want:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"x-rbee-decision stayed {seen!r}, never {want!r}")


def queen_throughput(requests: int, levels: list[int]) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "bench-hive", [f"{MODEL}=echo:"])
        dep.rbee("tenant", "create", "bench")
        key = dep.rbee("key", "create", "--tenant", "bench", "--operator").stdout.strip()
        url = f"{queen.url}/v1/chat/completions"
        mode = "PostgreSQL + Redis" if dep.env.get("RBEE_DATABASE_URL") else "embedded default"

        rows: dict[tuple[str, int], tuple[list[float], float, int, Counter[str]]] = {}

        def measure(script: str) -> None:
            for c in levels:
                rows[(script, c)] = asyncio.run(load(url, key, c, max(requests, c * 4)))

        wait_for_decision(url, key, "default")
        measure("off")

        consumer = seed_scripts()[0]
        # The same script without its should_admit (which rejects once queue_depth > 10, so
        # 16 clients get 429s): what routing alone costs the request path under load.
        route_only = consumer.split("// Admission control (optional)")[0]
        for name, source in (("consumer", consumer), ("route-only", route_only)):
            path = dep.home / f"{name}.rhai"
            path.write_text(source)
            out = dep.rbee("scheduler", "reload", str(path))
            if "stored" not in out.stdout:
                raise AssertionError(out.stdout + out.stderr)
            time.sleep(1.5)  # queens re-check the stored version every 1 s (the default)
            wait_for_decision(url, key, "script")
            measure(name)

        print(
            f"2. The queen's requests/s, scheduler script off vs on ({mode}; one hive, echo "
            f"engine; {requests} requests per row)\n"
        )
        print(
            f"{'script':10} {'clients':>7} | {'p50':>8} {'p99':>8} {'req/s':>7} {'non-200':>7} | "
            f"{'answers (x-rbee-decision / status)':36} | {'p50 vs off':>10} {'req/s vs off':>12}"
        )
        for script in ("off", "consumer", "route-only"):
            for c in levels:
                lat, rps, err, dec = rows[(script, c)]
                base_lat, base_rps = rows[("off", c)][0], rows[("off", c)][1]
                p50 = statistics.median(lat)
                seen = ", ".join(f"{k} {v}" for k, v in sorted(dec.items()))
                d50 = (p50 - statistics.median(base_lat)) * 1e3
                drps = (rps / base_rps - 1) * 100
                print(
                    f"{script:10} {c:7d} | {p50 * 1e3:6.2f}ms {pct(lat, 99) * 1e3:6.1f}ms "
                    f"{rps:7.0f} {err:7d} | {seen:36} | {d50:+8.2f}ms {drps:+11.0f}%",
                    flush=True,
                )
    finally:
        dep.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=3000, help="most calls per decision row")
    ap.add_argument("--seconds", type=float, default=1.5, help="most seconds per decision row")
    ap.add_argument("--workers", default="10,100,1000")
    ap.add_argument("--requests", type=int, default=300, help="requests per queen row")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--skip-queen", action="store_true", help="only the in-process part")
    args = ap.parse_args()

    started = time.perf_counter()
    decision_costs([int(n) for n in args.workers.split(",")], args.iterations, args.seconds)
    if not args.skip_queen:
        queen_throughput(args.requests, [int(c) for c in args.concurrency.split(",")])
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
