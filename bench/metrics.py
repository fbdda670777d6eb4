"""What /metrics costs: one scrape over a large fleet, and the recording on the hot path.

    python bench/metrics.py [--hives 10,100,500] [--devices 4] [--workers 8] [--models 20]
                            [--runs 5] [--db postgres://postgres@127.0.0.1:5432/] [--sqlite]

On a fresh database of its own (PostgreSQL by default, dropped afterwards; `--sqlite`: a
file in a temporary RBEE_HOME) it creates, for each size in `--hives`, that many online
hives with `--devices` GPUs and `--workers` workers each (their telemetry as heartbeats
leave it), and fills this process's request series with traffic for `--models` models on
every endpoint (so the per-process part of the answer is the size a busy queen's is). It
then prints, per size, the median of `--runs` scrapes:

* read: rbee.metrics.read_fleet(), the one trip to the database (queries counted);
* render: rbee.metrics.render(), the text of every series (off the event loop);
* whole: GET /metrics through the queen's ASGI application as Daphne calls it (the lean
  API app of rbee/api_asgi.py: the view, both steps, the response's bytes);
* the answer's size in bytes and series.

And the recording each /v1 request adds on the event loop, in microseconds per request:
the rbee series of one chat request (request, queue wait, job: tokens, first token,
inter-token latency), django-prometheus' middleware methods as rbee/api_asgi.py calls them,
and a refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.benchdb import bench_database, h100s  # noqa: E402
from testkit.benchtime import timed  # noqa: E402


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    """Best of 5 batches of n calls: microseconds per call."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


class Counted:
    """A database execute wrapper that keeps each query's SQL."""

    def __init__(self, into: list[str]) -> None:
        self.into = into

    def __call__(self, execute: Any, sql: str, *rest: Any) -> Any:
        self.into.append(sql)
        return execute(sql, *rest)


def grow_fleet(total: int, devices: int, workers: int, models: list[Any]) -> None:
    """Online hives up to `total`, each with its devices and workers."""
    from django.utils import timezone

    from hives.models import Hive, Worker
    from kernel import secrets

    have = Hive.objects.count()
    new = []
    for n in range(have, total):
        made = secrets.make(Hive.TOKEN_KIND)
        new.append(
            Hive(
                name=f"hive-{n:04d}",
                token_prefix=made.prefix,
                token_hash=made.digest,
                status=Hive.Status.ONLINE,
                channel_name=f"specific.bench!{n}",
                version="0.9.0",
                region="eu" if n % 2 else "us",
                devices=h100s(devices, 1000 + n),
                telemetry={"inflight": 0},
                last_seen_at=timezone.now(),
            )
        )
    Hive.objects.bulk_create(new, batch_size=500)
    Hive.objects.update(last_seen_at=timezone.now())
    states = ["ready", "ready", "ready", "unloaded", "starting", "failed"]
    made_hives = Hive.objects.filter(name__in=[h.name for h in new])
    Worker.objects.bulk_create(
        (
            Worker(
                hive=h,
                model=models[i % len(models)],
                device=f"cuda:{i % devices}",
                state=states[i % len(states)],
                memory_bytes=(i + 1) * 2**30,
                inflight=i % 3,
                slots=4,
            )
            for h in made_hives
            for i in range(workers)
        ),
        batch_size=2000,
    )


def busy_queen(models: list[str]) -> None:
    """This process's request series as a busy queen has them: every model on the two
    endpoints of its kind (chat and completions for a text model) with 2xx, 4xx and 5xx
    answers, jobs, tokens and queue waits."""
    from inference import metrics

    for m in models:
        metrics.MODELS.learn(m)
        for task in ("chat", "completion"):
            for status in (200, 404, 503):
                metrics.request_done(model=m, endpoint=task, status=status, seconds=0.2)
        metrics.queue_waited(m, 0.01)
        for outcome in ("ok", "error", "abandoned"):
            metrics.job_done(
                model=m,
                outcome=outcome,
                ttft=0.1,
                inter_token=0.02,
                prompt_tokens=10,
                completion_tokens=20,
                images=1,
                audio_seconds=1.0,
                characters=10,
            )
    for reason in sorted(metrics.REFUSAL_REASONS):
        metrics.refused(reason)


def recording_costs() -> list[tuple[str, float]]:
    """Microseconds per request of what the hot path records."""
    from django.test import RequestFactory
    from django.urls import resolve

    from inference import metrics
    from rbee.api_asgi import APIApplication

    metrics.MODELS.learn("bench-model")

    def one_chat() -> None:
        metrics.queue_waited("bench-model", 0.003)
        metrics.job_done(
            model="bench-model",
            outcome="ok",
            ttft=0.12,
            inter_token=0.021,
            prompt_tokens=25,
            completion_tokens=64,
        )
        metrics.request_done(model="bench-model", endpoint="chat", status=200, seconds=1.4)

    app = APIApplication()
    request = RequestFactory().post(
        "/v1/chat/completions", data=b"{}", content_type="application/json"
    )
    match = resolve("/v1/chat/completions")
    from django.http import JsonResponse

    response = JsonResponse({"ok": True})

    def django_prometheus() -> None:
        app.before.process_request(request)
        app.after.process_request(request)
        request.resolver_match = match
        app.after.process_view(request, match.func, *match.args, **match.kwargs)
        app.after.process_response(request, response)
        app.before.process_response(request, response)

    n = 20_000
    return [
        ("rbee series of one chat request (5 series)", per_call_us(one_chat, n)),
        ("django-prometheus' methods (api_asgi.py)", per_call_us(django_prometheus, n)),
        ("a refusal", per_call_us(lambda: metrics.refused("quota_tokens"), n)),
    ]


def asgi_get(loop: Any, path: str) -> tuple[int, bytes]:
    """One GET through the queen's ASGI application on `loop` (kept across calls, as a
    queen's is: its executor threads keep their database connections): (status, body)."""
    import asyncio

    from rbee.asgi import application

    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 7833),
    }

    async def run() -> None:
        messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

        async def receive() -> dict[str, Any]:
            try:
                return next(messages)
            except StopIteration:
                await asyncio.sleep(3600)  # the client stays until the answer is sent
                raise

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await application(scope, receive, send)

    loop.run_until_complete(run())
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(sent[0]["status"]), body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hives", default="10,100,500")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/")
    ap.add_argument("--sqlite", action="store_true")
    args = ap.parse_args()

    with bench_database("metrics", sqlite=args.sqlite, server=args.db) as backend:
        from django.db import connection

        from gdpr import audit, ledger
        from hives.models import CatalogModel
        from rbee import metrics as scrape_metrics

        loop = asyncio.new_event_loop()
        names = [f"model-{i:02d}" for i in range(args.models)]
        models = [
            CatalogModel.objects.create(name=n, capability="text-gen", engine="echo") for n in names
        ]
        busy_queen(names)
        audit.record_many(
            audit.Event("key.create", actor="bench", data={"n": i}) for i in range(100)
        )
        ledger.checkpoint()
        print(
            f"/metrics benchmark on {backend}; hives x {args.devices} GPUs x {args.workers} "
            f"workers, {args.models} models of traffic in this process; CPython "
            f"{sys.version.split()[0]}"
        )
        print(
            f"{'hives':>6} {'queries':>8} {'read':>9} {'render':>9} {'whole':>9} "
            f"{'bytes':>11} {'series':>8}"
        )
        for total in (int(x) for x in args.hives.split(",") if x.strip()):
            grow_fleet(total, args.devices, args.workers, models)
            scrape_metrics.checkpoints.forget()
            queries: list[str] = []
            with connection.execute_wrapper(Counted(queries)):
                scrape_metrics.read_fleet()
            read_s, fleet = timed(scrape_metrics.read_fleet, args.runs)
            render_s, body = timed(lambda f=fleet: scrape_metrics.render(f), args.runs)
            whole_s, (status, _) = timed(lambda: asgi_get(loop, "/metrics"), args.runs)
            assert status == 200
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            print(
                f"{total:>6} {len(queries):>8} {read_s * 1e3:>6.1f} ms {render_s * 1e3:>6.1f} ms "
                f"{whole_s * 1e3:>6.1f} ms {len(body):>11,} {series:>8,}"
            )
        print("\nrecorded per /v1 request, on the event loop:")
        for label, us in recording_costs():
            print(f"  {label:<48} {us:>6.1f} us")


if __name__ == "__main__":
    main()
