"""The audit log (gdpr.audit, gdpr.ledger): appends per second, and `rbee audit verify`
over a large log.

    python bench/audit.py [--events 1000000] [--db postgres://postgres@127.0.0.1:5432/]
                          [--sqlite]

On a fresh database of its own (PostgreSQL by default, dropped afterwards; `--sqlite`: a
temporary RBEE_HOME), it times:

* appends: `record()` one event per transaction (what an app's service does), `record()`
  many events in one transaction, and `record_many()` batches of 1,000 (what the
  inference feed does); each event like an inference event: an end user sealed under
  their own subject key (1,000 distinct end users), a key prefix, model, units;
* filling the log to `--events` with `record_many`, then the sequencer (`sequence()`,
  leaf hashes and tree order) and one signed checkpoint;
* the real `rbee audit verify` command over the whole log, in its own process.
Goals (issue 12): >= 5,000 appends/s on PostgreSQL; verify of 1,000,000 events <= 60 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.benchdb import bench_database  # noqa: E402


def event(i: int):  # type: ignore[no-untyped-def]
    from gdpr import audit, subjects

    user = f"user-{i % 1000}"
    return audit.Event(
        "inference",
        actor="key:ab12cd34ef",
        tenant_id=1 + i % 7,
        subject=subjects.end_user("acme", user),
        personal={"end_user": user},
        data={
            "model": "smollm2-135m-instruct",
            "modality": "chat",
            "hive": "hive-eu-1",
            "device": "0",
            "units": {"prompt_tokens": 31, "completion_tokens": 17},
            "latency_ms": 84,
        },
        request_id=f"req-{uuid.uuid4().hex}",
        region="eu",
    )


def feed(n: int) -> None:
    """What each /v1 request costs the audit log: nothing on its own path (its usage row is
    written as before); off the path, the feed turns finished usage rows into events and
    the sequencer hashes them. Timed per request, against the usage write itself."""
    from billing.audit_feed import usage_audit_append
    from billing.services import Usage, usage_record
    from gdpr import ledger
    from tenants.services import api_key_create, tenant_create

    t = tenant_create(name=f"bench-{uuid.uuid4().hex[:6]}")
    key, _ = api_key_create(tenant=t)
    ledger.sequence(limit=50_000)
    print(f"inference feed, per request ({n:,} finished requests, 500 end users)")
    for label in ("end users seen for the first time", "end users already known"):
        t0 = time.perf_counter()
        for i in range(n):
            usage_record(
                request_id=f"feed-{uuid.uuid4().hex}",
                tenant_id=t.pk,
                api_key_id=key.pk,
                model="smollm2-135m-instruct",
                modality="chat",
                usage=Usage(prompt_tokens=31, completion_tokens=17),
                worker="hive-eu-1/0",
                region="eu",
                end_user=f"user-{i % 500}",
            )
        usage_us = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        while usage_audit_append():
            pass
        feed_us = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        ledger.sequence(limit=50_000)
        seq_us = (time.perf_counter() - t0) / n * 1e6
        print(f"  {label}:")
        print(f"    request path: 0 queries added (its usage write, as before: {usage_us:.0f} us)")
        print(f"    background: feed {feed_us:.0f} us + sequencer {seq_us:.0f} us")


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f}/s  ({n:,} in {seconds:.2f} s)"


def proof_timing(size: int) -> None:
    """Proof and consistency latency at this size (the cached way), and what one proof
    cost before the cache: every leaf hash read and the root recomputed."""
    import random
    import statistics

    from gdpr import ledger, merkle
    from gdpr.models import AuditLeaf

    rng = random.Random(12)
    idx = [rng.randrange(size) for _ in range(200)]
    ids = dict(AuditLeaf.objects.filter(index__in=idx).values_list("index", "event_id"))
    took = []
    for i in idx:
        t0 = time.perf_counter()
        ledger.proof(event_id=ids[i])
        took.append(time.perf_counter() - t0)
    took.sort()
    print(
        f"proof, 200 random events of {size:,}    median {1000 * statistics.median(took):.1f} ms, "
        f"p99 {1000 * took[197]:.1f} ms, max {1000 * took[-1]:.1f} ms"
    )
    took = []
    for old in [rng.randrange(1, size) for _ in range(50)]:
        t0 = time.perf_counter()
        ledger.consistency(old=old)
        took.append(time.perf_counter() - t0)
    print(f"consistency proof, 50 random sizes      median {1000 * statistics.median(took):.1f} ms")
    t0 = time.perf_counter()
    merkle.root(list(ledger._leaf_hashes(0, size)))
    took1 = time.perf_counter() - t0
    print(f"  before the cache, one proof read and hashed every leaf: {took1:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/")
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument(
        "--feed", type=int, default=5000, help="usage rows for the inference feed's cost (0: skip)"
    )
    args = ap.parse_args()

    with bench_database("audit", sqlite=args.sqlite, server=args.db) as backend:
        from django.db import connection, transaction

        from gdpr import audit, ledger

        print(
            f"audit log benchmark on {backend}; {args.events:,} events; "
            f"CPython {sys.version.split()[0]}"
        )
        print("appends")
        n = 3000
        evs = [event(i) for i in range(n)]

        def one(ev):  # type: ignore[no-untyped-def]
            audit.record(
                ev.action,
                actor=ev.actor,
                tenant_id=ev.tenant_id,
                subject=ev.subject,
                personal=ev.personal,
                data=ev.data,
                request_id=ev.request_id,
                region=ev.region,
            )

        t0 = time.perf_counter()
        for ev in evs:
            one(ev)
        print(f"  record(), one transaction each      {rate(n, time.perf_counter() - t0)}")
        evs = [event(i) for i in range(n)]
        t0 = time.perf_counter()
        with transaction.atomic():
            for ev in evs:
                one(ev)
        print(f"  record(), {n:,} in one transaction  {rate(n, time.perf_counter() - t0)}")
        m = 20_000
        evs = [event(i) for i in range(m)]
        t0 = time.perf_counter()
        for k in range(0, m, 1000):
            audit.record_many(evs[k : k + 1000])
        print(f"  record_many(), batches of 1,000     {rate(m, time.perf_counter() - t0)}")

        if args.feed:
            feed(args.feed)
        have = 2 * n + m + 2 * args.feed
        left = max(0, args.events - have)
        t0 = time.perf_counter()
        batch = 5000
        done = 0
        while done < left:
            k = min(batch, left - done)
            audit.record_many([event(done + i) for i in range(k)])
            done += k
        if left:
            print(f"  fill with record_many()              {rate(left, time.perf_counter() - t0)}")
        t0 = time.perf_counter()
        placed = ledger.sequence(limit=50_000)
        print(f"sequence (leaf hashes, tree order)      {rate(placed, time.perf_counter() - t0)}")
        t0 = time.perf_counter()
        cp = ledger.checkpoint()
        assert cp is not None
        print(f"checkpoint (root of {cp.size:,}, signed)   {time.perf_counter() - t0:.2f} s")
        print("  (the first one: it reads every leaf once to fill the chunk-root cache)")
        audit.record_many([event(i) for i in range(1000)])
        t0 = time.perf_counter()
        ledger.sequence()
        print(f"sequence (+1,000 events)                {time.perf_counter() - t0:.3f} s")
        t0 = time.perf_counter()
        cp = ledger.checkpoint()
        assert cp is not None
        print(f"checkpoint (+1,000 events, of {cp.size:,})  {time.perf_counter() - t0:.3f} s")
        proof_timing(cp.size)
        connection.close()

        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "rbee.cli", "audit", "verify"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - t0
        print(f"rbee audit verify                       {took:.2f} s  (exit {proc.returncode})")
        print("  " + (proc.stdout.strip() or proc.stderr.strip()))


if __name__ == "__main__":
    main()
