"""Server time of the web faces' pages (/ui, /console, /portal; the portal's usage pages
are bench/portal.py's) on a large deployment.

    python bench/web_pages.py [--runs 20] [--days 14]
                              [--db postgres://postgres@127.0.0.1:5432/] [--sqlite]

On a fresh database of its own (PostgreSQL by default, dropped afterwards; `--sqlite`: a
file in a temporary RBEE_HOME) it seeds, in bulk: 50 hives x (4 devices, 8 workers) with
telemetry, 20 catalog models, 2,000 tenants on 5 plans with 5 keys and 3 members each,
200,000 audit events (gdpr.audit.record_many, sequenced and checkpointed), 300 GDPR
requests, 5,000 invoices, and `--days` of per-minute RequestStat rows for the 20 models
and DeviceSample rows for the 200 devices (COPY on PostgreSQL, executemany on SQLite).
Then it times each page with Django's test client (the whole Django request: session,
permission, queries, template; no network), signed in with force_login (an operator who
is a superuser; the owner of one tenant for the portal): `--runs` requests after 3
warm-ups; median and p95 in ms, and the number of SQL queries of one request.
Goal (issue 13, set for the usage pages): <= 200 ms of server time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.benchdb import bench_database  # noqa: E402

HIVES = 50
DEVICES = ("cpu", "cuda:0", "cuda:1", "cuda:2")
WORKERS_PER_HIVE = 8
MODELS = [f"model-{i:02d}" for i in range(20)]
TENANTS = 2000
KEYS_PER_TENANT = 5
MEMBERS_PER_TENANT = 3
AUDIT_EVENTS = 200_000
GDPR_REQUESTS = 300
INVOICES = 5000
WARMUPS = 3


def device_entries(h: int) -> list[dict[str, Any]]:
    cpu = {
        "index": 0,
        "kind": "cpu",
        "name": "AMD EPYC 9454",
        "gpu_type": "CPU",
        "memory_total_mb": 262144,
        "memory_free_mb": 200000 - h * 100,
        "utilization": None,
    }
    gpus = [
        {
            "index": i,
            "kind": "cuda",
            "name": "NVIDIA L40S",
            "gpu_type": "L40S",
            "memory_total_mb": 46068,
            "memory_free_mb": 10000 + 1000 * i,
            "memory_used_mb": 36068 - 1000 * i,
            "utilization": 40 + (h + i) % 60,
        }
        for i in range(3)
    ]
    return [cpu, *gpus]


def copy_rows(table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]) -> None:
    """Bulk insert: COPY on PostgreSQL, executemany in batches on SQLite."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"ANALYZE {table}")
            return
        marks = ", ".join(["%s"] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        cursor.execute("PRAGMA synchronous = OFF")  # a benchmark's fill, not a queen's
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            # As Django stores a datetime in SQLite: naive UTC text.
            batch.append(
                tuple(
                    v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                    if isinstance(v, datetime)
                    else v
                    for v in row
                )
            )
            if len(batch) == 50_000:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)


def seed(days: int) -> dict[str, Any]:
    """The deployment; returns what the pages need (names, ids) and the seeding times."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.utils import timezone

    from billing.models import Invoice
    from gdpr import audit, ledger, subjects
    from gdpr.models import SubjectRequest
    from hives.models import Assignment, CatalogModel, DeviceSample, Hive, ModelDownload, Worker
    from inference.models import RequestStat
    from tenants.models import ApiKey, Membership, Plan, Tenant

    took: dict[str, float] = {}
    now = timezone.now()
    minute0 = now.replace(second=0, microsecond=0)

    t0 = time.perf_counter()
    catalog = CatalogModel.objects.bulk_create(
        CatalogModel(name=m, capability="text-gen", engine="llama.cpp", source=f"hf:org/{m}")
        for m in MODELS
    )
    hives = Hive.objects.bulk_create(
        Hive(
            name=f"hive-{h:02d}",
            token_prefix=f"hv{h:02d}",
            token_hash="0" * 64,
            status=Hive.Status.ONLINE if h % 10 else Hive.Status.OFFLINE,
            channel_name=f"specific.bench!hive-{h:02d}" if h % 10 else "",
            region=("eu", "us", "ap")[h % 3],
            version="0.9.0",
            devices=device_entries(h),
            telemetry={
                "inflight": h % 5,
                "ready_since": {
                    f"{MODELS[(h + w) % 20]}|{DEVICES[w % 4]}": [4000 + w, now.timestamp() - 3600]
                    for w in range(WORKERS_PER_HIVE)
                },
            },
            connected_at=now - timedelta(hours=5),
            last_seen_at=now - timedelta(seconds=2),
        )
        for h in range(HIVES)
    )
    Worker.objects.bulk_create(
        Worker(
            hive=hive,
            model=catalog[(h + w) % 20],
            device=DEVICES[w % 4],
            state=("ready", "ready", "ready", "loading", "ready", "failed", "ready", "ready")[w],
            pinned=w == 0,
            inflight=w % 3,
            slots=4,
            memory_bytes=(2 + w) * 2**30,
        )
        for h, hive in enumerate(hives)
        for w in range(WORKERS_PER_HIVE)
    )
    Assignment.objects.bulk_create(
        Assignment(
            hive=hive,
            model_name=MODELS[h % 20],
            spec=MODELS[h % 20],
            device=DEVICES[0],
            pinned=True,
        )
        for h, hive in enumerate(hives)
    )
    ModelDownload.objects.bulk_create(
        ModelDownload(
            hive=hives[i % HIVES],
            source=f"hf:org/{MODELS[i % 20]}",
            status="done" if i % 4 else "downloading",
            done_bytes=i * 2**20,
            total_bytes=200 * 2**20,
        )
        for i in range(100)
    )
    took["hives, devices, workers"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    plans = Plan.objects.bulk_create(
        Plan(
            name=name,
            description=f"the {name} plan",
            requests_per_day=10_000 * (i + 1),
            tokens_per_day=1_000_000 * (i + 1),
            allowed_models=MODELS[: 5 * (i + 1)] if i < 3 else [],
        )
        for i, name in enumerate(("free", "starter", "team", "business", "enterprise"))
    )
    tenants = Tenant.objects.bulk_create(
        Tenant(
            name=f"tenant-{i:04d}",
            plan=plans[i % 5],
            status=Tenant.Status.ACTIVE if i % 20 else Tenant.Status.SUSPENDED,
            billing_email=f"billing@tenant-{i:04d}.example",
        )
        for i in range(TENANTS)
    )
    ApiKey.objects.bulk_create(
        ApiKey(
            tenant=t,
            name=f"key {k}",
            prefix=f"k{i:04d}x{k}",
            key_hash=f"{i:060d}{k:04d}",
            last_used_at=now - timedelta(minutes=i % 600) if k % 2 == 0 else None,
            revoked_at=now - timedelta(days=3) if k == 4 else None,
        )
        for i, t in enumerate(tenants)
        for k in range(KEYS_PER_TENANT)
    )
    password = make_password("pw-123456789")  # hashed once, shared by every member
    users = User.objects.bulk_create(
        User(
            username=f"m{m}@tenant-{i:04d}.example",
            email=f"m{m}@tenant-{i:04d}.example",
            password=password,
        )
        for i in range(TENANTS)
        for m in range(MEMBERS_PER_TENANT)
    )
    Membership.objects.bulk_create(
        Membership(
            user=users[i * MEMBERS_PER_TENANT + m],
            tenant=t,
            role=("owner", "admin", "member")[m],
        )
        for i, t in enumerate(tenants)
        for m in range(MEMBERS_PER_TENANT)
    )
    took["tenants, plans, keys, members"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    month = now.date().replace(day=1)
    months = []
    for _ in range(3):
        months.append(month)
        month = (month - timedelta(days=1)).replace(day=1)
    Invoice.objects.bulk_create(
        Invoice(
            tenant=tenants[i % TENANTS],
            period_start=months[i // TENANTS],
            period_end=(months[i // TENANTS] + timedelta(days=32)).replace(day=1)
            - timedelta(days=1),
            status=("draft", "open", "paid")[i % 3] if i // TENANTS else "draft",
            lines=[
                {
                    "model": MODELS[j],
                    "unit": "prompt_tokens",
                    "quantity": 1000 * j,
                    "unit_price": "0.0000005",
                    "amount": "0.0005",
                }
                for j in range(4)
            ],
            total=f"{(i % 997) * 1.37:.2f}",
            customer_name=f"Tenant {i % TENANTS:04d} Ltd",
            customer_email=f"billing@tenant-{i % TENANTS:04d}.example",
        )
        for i in range(INVOICES)
    )
    SubjectRequest.objects.bulk_create(
        SubjectRequest(
            kind=("export", "erase")[i % 2],
            subject_hash=f"{i:064d}",
            subject_label=f"enduser:tenant-{i % TENANTS:04d}/user-{i}",
            requested_by="cli" if i % 3 else f"account:{users[i].pk}",
            requested_by_user_id=None if i % 3 else users[i].pk,
            status=("received", "running", "done", "failed")[i % 4],
            received_at=now - timedelta(days=i % 40),
            due_at=now - timedelta(days=i % 40) + timedelta(days=30),
        )
        for i in range(GDPR_REQUESTS)
    )
    took["invoices, GDPR requests"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    users_seen = 1000

    def event(i: int) -> audit.Event:
        tenant = i % TENANTS
        kind = i % 10
        if kind < 7:
            user = f"user-{i % users_seen}"
            return audit.Event(
                "inference",
                actor=f"key:k{tenant:04d}x{i % 5}",
                tenant_id=tenants[tenant].pk,
                subject=subjects.end_user(f"tenant-{tenant:04d}", user),
                personal={"end_user": user},
                data={
                    "model": MODELS[i % 20],
                    "modality": "chat",
                    "hive": f"hive-{i % 50:02d}",
                    "units": {"prompt_tokens": 31, "completion_tokens": 17},
                },
                request_id=f"req-{i}",
                region="eu",
                created_at=now - timedelta(seconds=(AUDIT_EVENTS - i) * 3),
            )
        action, actor = (
            ("key.create", "cli:ops"),
            ("tenant.plan", "cli:ops"),
            ("hive.token", "system"),
        )[kind - 7]
        return audit.Event(
            action,
            actor=actor,
            tenant_id=tenants[tenant].pk,
            data={"note": f"bench {i}"},
            created_at=now - timedelta(seconds=(AUDIT_EVENTS - i) * 3),
        )

    for start in range(0, AUDIT_EVENTS, 5000):
        audit.record_many([event(i) for i in range(start, min(AUDIT_EVENTS, start + 5000))])
    took["audit events (record_many)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    while ledger.sequence(limit=50_000):
        pass
    ledger.checkpoint()
    took["audit sequence + checkpoint"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    minutes = days * 1440

    def stat_rows() -> Iterator[tuple[Any, ...]]:
        for k in range(minutes):
            minute = minute0 - timedelta(minutes=minutes - 1 - k)
            for j, model in enumerate(MODELS):
                requests = 5 + (k * 7 + j * 13) % 60
                yield (
                    minute,
                    model,
                    requests,
                    int(k % 50 == 0),
                    120.0 * requests,
                    requests,
                    40 * requests,
                    0.8 * requests,
                    15.0 * requests,
                )

    copy_rows(
        RequestStat._meta.db_table,
        (
            "minute",
            "model",
            "requests",
            "errors",
            "ttft_ms_sum",
            "ttft_count",
            "output_tokens",
            "generation_seconds",
            "queue_wait_ms_sum",
        ),
        stat_rows(),
    )
    took[f"RequestStat ({minutes * len(MODELS):,} rows)"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    def sample_rows() -> Iterator[tuple[Any, ...]]:
        for k in range(minutes):
            minute = minute0 - timedelta(minutes=minutes - 1 - k)
            for hive in hives:
                for d, device in enumerate(DEVICES):
                    total = 262144 if d == 0 else 46068
                    yield (
                        hive.pk,
                        device,
                        minute,
                        (k * 31 + d * 977) % total,
                        total,
                        None if d == 0 else float((k + d) % 100),
                    )

    copy_rows(
        DeviceSample._meta.db_table,
        ("hive_id", "device", "minute", "memory_used_mb", "memory_total_mb", "utilization"),
        sample_rows(),
    )
    took[f"DeviceSample ({minutes * HIVES * len(DEVICES):,} rows)"] = time.perf_counter() - t0
    return {"took": took, "tenant": tenants[7], "owner": users[7 * MEMBERS_PER_TENANT]}


def measure(fn: Callable[[], Any], runs: int) -> tuple[float, float, int]:
    """(median ms, p95 ms, SQL queries of one call) over `runs` calls after warm-ups."""
    from django.db import connection

    for _ in range(WARMUPS):
        fn()
    queries = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, max(0, round(0.95 * len(samples)) - 1))]
    return statistics.median(samples), p95, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--days", type=int, default=14, help="days of per-minute chart rows")
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/")
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument(
        "--only",
        default="",
        help="time only the pages whose label holds one of these (comma-separated)",
    )
    ap.add_argument(
        "--profile", action="store_true", help="print cProfile's top functions of each page"
    )
    args = ap.parse_args()

    with bench_database("web", sqlite=args.sqlite, server=args.db) as backend:
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client

        from web.ui.live import render_fleet

        print(
            f"web pages benchmark on {backend}; {args.runs} runs after {WARMUPS} warm-ups; "
            f"CPython {sys.version.split()[0]}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        seeded = seed(args.days)
        for what, seconds in seeded["took"].items():
            print(f"seed: {what:<34} {seconds:6.1f} s")
        tenant = seeded["tenant"]
        operator = User.objects.create_superuser("ops", "ops@rbee.example", "pw-123456789")
        ops = Client()
        ops.force_login(operator)
        owner = Client()
        owner.force_login(seeded["owner"])
        t = f"/portal/t/{tenant.name}"

        def get(client: Client, url: str) -> Callable[[], Any]:
            def call() -> Any:
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)
                return response.content

            return call

        cases: list[tuple[str, Callable[[], Any]]] = [
            ("/ui/ (fleet)", get(ops, "/ui/")),
            ("fleet websocket render (render_fleet)", render_fleet),
            ("/ui/scheduler", get(ops, "/ui/scheduler")),
            ("/ui/charts (1 h)", get(ops, "/ui/charts")),
            ("/ui/charts?range=24h", get(ops, "/ui/charts?range=24h")),
            ("/ui/charts?range=7d", get(ops, "/ui/charts?range=7d")),
        ]
        for metric in ("rps", "ttft", "tps", "queue", "memory"):
            for rng in ("24h", "7d"):
                cases.append(
                    (
                        f"/ui/charts/data {metric} {rng}",
                        get(ops, f"/ui/charts/data?metric={metric}&range={rng}"),
                    )
                )
        cases += [
            ("/console/", get(ops, "/console/")),
            ("/console/tenants (page 1)", get(ops, "/console/tenants")),
            ("/console/tenants?q=tenant-01", get(ops, "/console/tenants?q=tenant-01")),
            ("/console/tenants/<t> (detail)", get(ops, f"/console/tenants/{tenant.name}")),
            ("/console/keys?q=k0123", get(ops, "/console/keys?q=k0123")),
            ("/console/invoices", get(ops, "/console/invoices")),
            ("/console/hives", get(ops, "/console/hives")),
            ("/console/audit", get(ops, "/console/audit")),
            ("/console/audit?actor=cli:ops", get(ops, "/console/audit?actor=cli:ops")),
            ("/console/audit?tenant=<t>", get(ops, f"/console/audit?tenant={tenant.name}")),
            ("/console/gdpr", get(ops, "/console/gdpr")),
            ("/portal/t/<t>/ (overview)", get(owner, f"{t}/")),
            ("/portal/t/<t>/keys", get(owner, f"{t}/keys")),
            ("/portal/t/<t>/members", get(owner, f"{t}/members")),
            ("/portal/t/<t>/privacy", get(owner, f"{t}/privacy")),
        ]
        print(f"\n{'page (server time, Django test client)':<42} {'median':>9} {'p95':>9} queries")
        results = []
        for label, fn in cases:
            if args.only and not any(o in label for o in args.only.split(",")):
                continue
            median, p95, queries = measure(fn, args.runs)
            results.append({"page": label, "median_ms": median, "p95_ms": p95, "queries": queries})
            flag = "  > 200 ms" if median > 200 else ""
            print(f"{label:<42} {median:>6.1f} ms {p95:>6.1f} ms {queries:>6}{flag}")
            if args.profile:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.runcall(fn)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        if os.environ.get("BENCH_JSON"):
            Path(os.environ["BENCH_JSON"]).write_text(json.dumps(results, indent=1))
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        connection.close()


if __name__ == "__main__":
    main()
