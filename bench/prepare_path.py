"""Steps 1-4 of a /v1 request (key, body, model, placements, script) in-process: through
the database thread, as every request did before issue 15, and from what the queen
process keeps (inference.pipeline._prepare_async), timed alternately so both see the
same background load.

    python bench/prepare_path.py [--n 2000]

Runs on the embedded default in a fresh RBEE_HOME, or on PostgreSQL + Redis when
RBEE_DATABASE_URL / RBEE_REDIS_URL are set (it then creates and drops a database of its
own). Prints the median and p90 microseconds per request of each path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    os.environ.setdefault("RBEE_HOME", tempfile.mkdtemp(prefix="rbee-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rbee.settings")
    base = os.environ.get("RBEE_DATABASE_URL", "")
    dbname = ""
    if base:
        import psycopg

        dbname = f"rbee_bench_{uuid.uuid4().hex[:10]}"
        admin = base.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        os.environ["RBEE_DATABASE_URL"] = base.rsplit("/", 1)[0] + "/" + dbname
    try:
        run(args.n)
    finally:
        if dbname:
            import psycopg
            from django.db import connections

            connections.close_all()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')


def run(n: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.test import RequestFactory
    from django.utils import timezone

    from hives.models import CatalogModel, Hive, Worker
    from inference import chat, pipeline
    from kernel.aio import db
    from tenants.services import api_key_create, tenant_create

    hive = Hive.objects.create(
        name="bench-hive",
        token_prefix="tpb",
        token_hash="x",
        status=Hive.Status.ONLINE,
        channel_name="specific.bench!1",
        last_seen_at=timezone.now(),
        devices=[],
    )
    model = CatalogModel.objects.create(name="bench-llm", capability="text-gen", engine="echo")
    Worker.objects.create(hive=hive, model=model, device="cpu", state="ready")
    _, key = api_key_create(tenant=tenant_create(name="bench"))
    body = json.dumps({"model": "bench-llm", "messages": [{"role": "user", "content": "hi"}]})
    factory = RequestFactory()

    def request() -> object:
        return factory.post("/v1/chat/completions", data=body, content_type="application/json")

    async def bench() -> tuple[list[float], list[float]]:
        thread: list[float] = []
        kept: list[float] = []
        await pipeline._prepare_async(key, request(), chat.CHAT)  # type: ignore[arg-type]
        beat = time.monotonic()
        for _ in range(n):
            # Keep the hive live (its heartbeat) without bumping the generation.
            if time.monotonic() - beat > 3:
                beat = time.monotonic()
                await db(Hive.objects.filter(pk=hive.pk).update, last_seen_at=timezone.now())
            r = request()
            t = time.perf_counter()
            await db(pipeline.prepare, key, r, chat.CHAT)  # type: ignore[arg-type]
            thread.append(time.perf_counter() - t)
            r = request()
            t = time.perf_counter()
            await pipeline._prepare_async(key, r, chat.CHAT)  # type: ignore[arg-type]
            kept.append(time.perf_counter() - t)
        return thread, kept

    thread, kept = asyncio.run(bench())
    mode = "PostgreSQL + Redis" if os.environ.get("RBEE_REDIS_URL") else "embedded default"
    print(f"steps 1-4 of a chat request ({mode}), {n} each, alternately\n")
    print(f"{'path':36} {'median us':>10} {'p90 us':>10}")
    for name, xs in (("database thread (before)", thread), ("kept in the process (after)", kept)):
        xs = sorted(xs)
        med = statistics.median(xs) * 1e6
        p90 = xs[int(0.9 * (len(xs) - 1))] * 1e6
        print(f"{name:36} {med:10.0f} {p90:10.0f}")


if __name__ == "__main__":
    main()
