"""The whole gate of a /v1/ request, and how fast usage events are written.

    RBEE_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
    RBEE_REDIS_URL=redis://127.0.0.1:6379/0 python bench/gate_full.py [--calls 2000]

Gate = what the queen does before dispatch for a tenant with a plan: the bearer key's
lookup and constant-time check with its tenant and plan (one query, `caller_from_key`),
the plan's model check, then rates, concurrency and quotas in one atomic limiter call,
and at the end the settle. Timed per request (p50, p99) the way the view runs it: the
database part on the shared executor thread (`kernel.aio.db`), the limiter on the loop.

Usage events: `usage_record` (one UsageEvent plus its Stripe outbox rows, in one
transaction) called back to back; events per second, sequential and from 8 threads.

On the embedded default (no variables) it measures SQLite and the in-process limiter.
A scratch database `rbee_bench_gate` is created on PostgreSQL and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def setup_db() -> str:
    """Point Django at a scratch database and migrate it; returns a label."""
    os.environ.setdefault("RBEE_HOME", tempfile.mkdtemp(prefix="rbee-bench-"))
    url = os.environ.get("RBEE_DATABASE_URL", "")
    if url:
        import psycopg

        base = url.rsplit("/", 1)[0]
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "rbee_bench_gate" WITH (FORCE)')
            conn.execute('CREATE DATABASE "rbee_bench_gate"')
        os.environ["RBEE_DATABASE_URL"] = f"{base}/rbee_bench_gate"
    os.environ["RBEE_LIMITS_PREFIX"] = f"rbee-bench:{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return "PostgreSQL + Redis" if url else "SQLite + in-process limiter"


def drop_db() -> None:
    url = os.environ.get("RBEE_DATABASE_URL", "")
    if url.endswith("/rbee_bench_gate"):
        import psycopg
        from django.db import connections

        connections.close_all()
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "rbee_bench_gate" WITH (FORCE)')


def make_tenant() -> tuple[int, str]:
    from tenants.models import Plan
    from tenants.services import api_key_create, tenant_create

    Plan.objects.create(
        name="bench",
        allowed_models=["m"],
        requests_per_day=10**9,
        tokens_per_day=10**12,
        requests_per_minute=10**9,
        tokens_per_minute=10**9,
        max_concurrent=10**6,
    )
    t = tenant_create(name=f"bench-{uuid.uuid4().hex[:6]}", plan="bench")
    _, key = api_key_create(tenant=t, name="bench")
    return t.pk, key


async def gate_timings(
    calls: int, tenant_id: int, key: str
) -> tuple[list[float], list[float], list[float]]:
    from billing import gate
    from billing.limits import Cost, get_limiter
    from kernel.aio import db

    def lookup() -> object:
        from tenants.selectors import caller_from_key

        caller = caller_from_key(key)
        gate.check_access(caller, "chat", "m", [])
        return caller

    limiter = get_limiter()
    total, db_part, lim_part = [], [], []
    for i in range(calls + 50):
        t0 = time.perf_counter()
        caller = await db(lookup)
        t1 = time.perf_counter()
        admitted = await gate.admit(caller, Cost(requests=1, tokens=300))  # type: ignore[arg-type]
        await limiter.settle(str(tenant_id), admitted.ticket, Cost(requests=1, tokens=120))
        t2 = time.perf_counter()
        if i >= 50:  # warm-up
            total.append(t2 - t0)
            db_part.append(t1 - t0)
            lim_part.append(t2 - t1)
    return total, db_part, lim_part


def usage_rate(events: int, threads: int) -> float:
    from django.db import close_old_connections

    from billing.services import Usage, usage_record
    from tenants.models import Tenant

    t = Tenant.objects.first()
    assert t is not None
    t.stripe_customer_id = "cus_bench"  # so the Stripe outbox rows are written too
    t.save()
    tid = t.pk

    def write(n: int) -> None:
        try:
            for _ in range(n):
                usage_record(
                    request_id=uuid.uuid4().hex,
                    tenant_id=tid,
                    api_key_id=None,
                    model="m",
                    modality="chat",
                    usage=Usage(prompt_tokens=20, completion_tokens=40),
                    latency_ms=30,
                    worker="h/cpu",
                )
        finally:
            close_old_connections()

    started = time.perf_counter()
    if threads == 1:
        write(events)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, [events // threads] * threads))
    return (events // threads * threads) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()
    label = setup_db()
    try:
        tenant_id, key = make_tenant()
        total, db_part, lim_part = asyncio.run(gate_timings(args.calls, tenant_id, key))
        ms = 1000
        print(f"\nthe gate per request, {label}, {args.calls} requests after 50 warm-up\n")
        print(f"{'part':44} {'p50':>9} {'p99':>9} {'mean':>9}")
        for name, values in (
            ("key lookup + plan + model check (db hop)", db_part),
            ("rates, concurrency, quotas: admit+settle", lim_part),
            ("whole gate", total),
        ):
            print(
                f"{name:44} {pct(values, 0.5) * ms:8.3f}ms {pct(values, 0.99) * ms:8.3f}ms "
                f"{statistics.mean(values) * ms:8.3f}ms"
            )
        print(f"\nusage events written ({label}; each with 2 Stripe outbox rows)\n")
        for threads in (1, 8):
            rate = usage_rate(args.events, threads)
            print(f"{threads} thread{'s' if threads > 1 else ' '}: {rate:8.0f} events/s")
    finally:
        drop_db()


if __name__ == "__main__":
    main()
