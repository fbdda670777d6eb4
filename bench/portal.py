"""The portal's usage pages over a large usage table: server time of the usage page, a
chart's JSON and the CSV, read from the daily roll-up (billing.models.UsageDaily).

    python bench/portal.py [--events 1000000] [--runs 20]
                           [--db postgres://postgres@127.0.0.1:5432/] [--sqlite]

On a fresh database of its own (PostgreSQL by default, dropped afterwards; `--sqlite`: a
file in a temporary RBEE_HOME) it writes `--events` usage events in bulk (COPY on
PostgreSQL, executemany on SQLite) for 3 tenants (half of them the measured one's), 4
models, 5 keys per tenant plus keyless requests and 3 modalities over the last 120 days,
builds their roll-up with `usage_rollup_rebuild` (what `rbee billing rollup --rebuild`
runs; timed), then times, with Django's test client (the whole Django request: session,
membership, queries, template; no network), `--runs` times each after one warm-up:

* /portal/t/<t>/usage for the last 90 days, by day, by model and by key;
* /portal/t/<t>/usage/chart/tokens (90 days) and /portal/t/<t>/usage.csv (90 days, by day);
* for comparison, the same 90 days summed from the raw events (billing.selectors.
  usage_summary, what the API's usage endpoint reads).
Goal (issue 13): a usage page in <= 200 ms of server time with 1,000,000 usage events.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.benchdb import bench_database  # noqa: E402

MODELS = ("smollm2-135m-instruct", "llama-3-8b", "all-minilm-l6-v2", "whisper-base")
MODALITY = {
    "smollm2-135m-instruct": "chat",
    "llama-3-8b": "chat",
    "all-minilm-l6-v2": "embedding",
    "whisper-base": "transcription",
}
COLUMNS = (
    "request_id",
    "tenant_id",
    "api_key_id",
    "model",
    "modality",
    "prompt_tokens",
    "completion_tokens",
    "images",
    "audio_seconds",
    "characters",
    "latency_ms",
    "worker",
    "region",
    "end_user",
    "outcome",
    "created_at",
    "queen",
    "ticket",
)
DAYS = 120


def rows(n: int, tenants: list[int], keys: dict[int, list[int]]) -> Iterator[tuple[Any, ...]]:
    now = datetime.now(UTC)
    span = DAYS * 86400
    for i in range(n):
        tenant = tenants[0] if i % 2 == 0 else tenants[1 + (i // 2) % (len(tenants) - 1)]
        tenant_keys = keys[tenant]
        key = None if i % 7 == 6 else tenant_keys[i % len(tenant_keys)]
        model = MODELS[(i // 3) % len(MODELS)]
        modality = MODALITY[model]
        audio = (i % 50) / 4 if modality == "transcription" else 0.0
        prompt = 0 if modality == "transcription" else 20 + i % 300
        completion = 5 + i % 200 if modality == "chat" else 0
        outcome = "ok" if i % 97 else "disconnected"
        created = now - timedelta(seconds=(i * 7919) % span)
        yield (
            f"bench-{i}",
            tenant,
            key,
            model,
            modality,
            prompt,
            completion,
            0,
            audio,
            0,
            80 + i % 400,
            "hive-a/cpu",
            "",
            "",
            outcome,
            created,
            "",
            "",
        )


def fill(n: int, tenants: list[int], keys: dict[int, list[int]]) -> float:
    """Write n usage events in bulk; seconds taken."""
    from django.db import connection

    from billing.models import UsageEvent

    table = UsageEvent._meta.db_table
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            raw = cursor.cursor  # psycopg 3: COPY
            with raw.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows(n, tenants, keys):
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(COLUMNS))
            sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({marks})"
            batch: list[tuple[Any, ...]] = []
            cursor.execute("PRAGMA synchronous = OFF")  # a benchmark's fill, not a queen's
            for row in rows(n, tenants, keys):
                # As Django stores a datetime in SQLite: naive UTC text.
                when = row[15].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                batch.append((*row[:15], when, *row[16:]))
                if len(batch) == 50_000:
                    cursor.executemany(sql, batch)
                    batch = []
            if batch:
                cursor.executemany(sql, batch)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
    return time.perf_counter() - t0


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """(median, p95) in milliseconds over `runs`, after one warm-up call."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, max(0, round(0.95 * len(samples)) - 1))]
    return statistics.median(samples), p95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/")
    ap.add_argument("--sqlite", action="store_true")
    args = ap.parse_args()

    with bench_database("portal", sqlite=args.sqlite, server=args.db) as backend:
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client

        from billing.models import Price, UsageDaily
        from billing.selectors import period_bounds, usage_summary
        from billing.services import usage_rollup_rebuild
        from tenants.models import ApiKey, Membership, Plan, Tenant

        print(
            f"portal usage benchmark on {backend}; {args.events:,} usage events; "
            f"{args.runs} runs each; CPython {sys.version.split()[0]}"
        )
        plan = Plan.objects.create(name="team", tokens_per_day=10_000_000)
        tenants = [Tenant.objects.create(name=f"t{i}", plan=plan) for i in range(3)]
        keys = {
            t.pk: [
                ApiKey.objects.create(
                    tenant=t, name=f"key {k}", prefix=f"{t.pk}k{k}", key_hash="0" * 64
                ).pk
                for k in range(5)
            ]
            for t in tenants
        }
        for model in MODELS:
            Price.objects.create(model=model, unit="prompt_tokens", unit_price="0.0000005")
            Price.objects.create(model=model, unit="completion_tokens", unit_price="0.0000015")
        Price.objects.create(model="*", unit="audio_seconds", unit_price="0.0001")
        seconds = fill(args.events, [t.pk for t in tenants], keys)
        print(f"fill: {args.events:,} events in {seconds:.1f} s")
        t0 = time.perf_counter()
        written = usage_rollup_rebuild()
        print(
            f"roll-up rebuild (rbee billing rollup --rebuild): {written:,} rows "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {UsageDaily._meta.db_table}")
        tenant = tenants[0]
        user = User.objects.create_user("owner@t0.example", "owner@t0.example", "pw-123456789")
        Membership.objects.create(user=user, tenant=tenant, role="owner")
        client = Client()
        client.force_login(user)
        base = f"/portal/t/{tenant.name}"

        def get(url: str) -> Callable[[], Any]:
            def call() -> Any:
                response = client.get(url)
                assert response.status_code == 200, (url, response.status_code)
                return response.content

            return call

        cases = [
            ("usage page, 90 days by day", f"{base}/usage?range=90d&group=day"),
            ("usage page, 90 days by model", f"{base}/usage?range=90d&group=model"),
            ("usage page, 90 days by key", f"{base}/usage?range=90d&group=key"),
            ("chart JSON (tokens), 90 days", f"{base}/usage/chart/tokens?range=90d"),
            ("CSV, 90 days by day", f"{base}/usage.csv?range=90d&group=day"),
        ]
        print(f"{'server time (Django test client)':<40} {'median':>9} {'p95':>9}")
        out = io.StringIO()
        for label, url in cases:
            median, p95 = timed(get(url), args.runs)
            line = f"{label:<40} {median:>6.1f} ms {p95:>6.1f} ms"
            print(line)
            out.write(line + "\n")
        today = datetime.now(UTC).date()
        since, until = period_bounds(today - timedelta(days=89), today)
        median, p95 = timed(
            lambda: usage_summary(tenant_id=tenant.pk, start=since, end=until, group_by="day"),
            max(3, args.runs // 4),
        )
        print(
            f"{'(raw scan: usage_summary, 90 days)':<40} {median:>6.1f} ms {p95:>6.1f} ms"
            f"  ({max(3, args.runs // 4)} runs)"
        )
        connection.close()


if __name__ == "__main__":
    main()
