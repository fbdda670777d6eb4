"""The charts' metrics: each queen sums its requests per (minute, model) in memory and adds
them to RequestStat with upsert-increments; flushes of several queens at once add up on
PostgreSQL; a failed flush loses nothing; heartbeats keep one device sample per device and
minute; both are pruned after RBEE_METRICS_RETENTION_DAYS."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import close_old_connections, connection
from django.utils import timezone

from hives.models import DeviceSample, Hive
from hives.selectors import Placement
from hives.services import device_samples_record, hive_heartbeat
from inference import stats
from inference.dispatch import Job
from inference.models import RequestStat
from inference.stats import RollUp, Sums, minute_of, prune

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC).timestamp()  # a minute's start


def stat(model: str, minute: float) -> dict[str, Any]:
    row = RequestStat.objects.get(model=model, minute=minute_of(minute))
    return {
        k: getattr(row, k)
        for k in (
            "requests",
            "errors",
            "ttft_ms_sum",
            "ttft_count",
            "output_tokens",
            "generation_seconds",
            "queue_wait_ms_sum",
        )
    }


@pytest.mark.django_db
def test_a_flush_adds_the_minute_sums_and_a_second_flush_increments_them() -> None:
    r = RollUp()
    r.record(
        model="chat",
        ok=True,
        ttft_ms=100,
        output_tokens=10,
        generation_seconds=0.5,
        queue_wait_ms=4,
        at=T0 + 1,
    )
    r.record(
        model="chat",
        ok=False,
        ttft_ms=None,
        output_tokens=0,
        generation_seconds=2.0,
        queue_wait_ms=6,
        at=T0 + 59,
    )
    r.record(
        model="chat", ok=True, ttft_ms=50, output_tokens=5, generation_seconds=0.25, at=T0 + 60
    )  # the next minute
    r.record(model="embed", ok=True, at=T0 + 30)
    assert r.flush() == 3
    assert r.pending() == {}
    assert stat("chat", T0) == {
        "requests": 2,
        "errors": 1,
        "ttft_ms_sum": 100.0,
        "ttft_count": 1,
        "output_tokens": 10,
        "generation_seconds": 0.5,  # the failed one produced no tokens: no seconds
        "queue_wait_ms_sum": 10.0,
    }
    assert stat("chat", T0 + 60)["requests"] == 1
    assert stat("embed", T0) == {
        "requests": 1,
        "errors": 0,
        "ttft_ms_sum": 0.0,
        "ttft_count": 0,
        "output_tokens": 0,
        "generation_seconds": 0.0,
        "queue_wait_ms_sum": 0.0,
    }
    r.record(
        model="chat",
        ok=True,
        ttft_ms=300,
        output_tokens=7,
        generation_seconds=1.5,
        queue_wait_ms=20,
        at=T0 + 10,
    )
    assert r.flush() == 1
    assert stat("chat", T0) == {
        "requests": 3,
        "errors": 1,
        "ttft_ms_sum": 400.0,
        "ttft_count": 2,
        "output_tokens": 17,
        "generation_seconds": 2.0,
        "queue_wait_ms_sum": 30.0,
    }
    assert RequestStat.objects.count() == 3
    assert r.flush() == 0  # nothing pending: no query at all


def test_sums_taken_for_a_failed_flush_are_pending_again_with_what_came_meanwhile() -> None:
    r = RollUp()
    r.record(model="chat", ok=True, ttft_ms=10, output_tokens=1, generation_seconds=1, at=T0)
    taken = r.take()
    assert r.pending() == {}
    r.record(model="chat", ok=False, at=T0 + 5)
    r.give_back(taken)
    assert r.pending() == {
        (minute_of(T0), "chat"): Sums(
            requests=2,
            errors=1,
            ttft_ms_sum=10.0,
            ttft_count=1,
            output_tokens=1,
            generation_seconds=1.0,
            queue_wait_ms_sum=0.0,
        )
    }


@pytest.mark.django_db(transaction=True)
def test_two_queens_flushing_at_once_add_up_on_postgresql() -> None:
    assert connection.vendor == "postgresql", "this test is about PostgreSQL's upsert"
    queens = [RollUp(), RollUp()]
    rounds = 20
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(r: RollUp, ttft: float) -> None:
        try:
            for i in range(rounds):
                for model in ("a", "b", "c"):
                    for m in range(3):
                        r.record(
                            model=model,
                            ok=i % 2 == 0,
                            ttft_ms=ttft,
                            output_tokens=2,
                            generation_seconds=0.5,
                            queue_wait_ms=1,
                            at=T0 + 60 * m,
                        )
                barrier.wait(timeout=30)
                r.flush()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [
        threading.Thread(target=run, args=(q, t)) for q, t in zip(queens, (10.0, 30.0), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert RequestStat.objects.count() == 9
    for model in ("a", "b", "c"):
        for m in range(3):
            assert stat(model, T0 + 60 * m) == {
                "requests": 2 * rounds,
                "errors": rounds,  # every other round failed, in each queen
                "ttft_ms_sum": rounds * 10.0 + rounds * 30.0,
                "ttft_count": 2 * rounds,
                "output_tokens": 4 * rounds,
                "generation_seconds": 2 * rounds * 0.5,
                "queue_wait_ms_sum": 2 * rounds * 1.0,
            }


def _hive() -> Hive:
    return Hive.objects.create(
        name="box",
        token_prefix="tp-charts",
        token_hash="x",
        status=Hive.Status.ONLINE,
        channel_name="specific.box!1",
        last_seen_at=timezone.now(),
    )


GPU = {"kind": "cuda", "index": 0, "gpu_type": "RTX4090", "memory_total_mb": 24564}


@pytest.mark.django_db
def test_heartbeats_keep_one_device_sample_per_device_and_minute() -> None:
    hive = _hive()
    beat = {
        "devices": [
            {**GPU, "memory_used_mb": 1000, "memory_free_mb": 23564, "utilization": 7},
            {"kind": "cpu", "memory_total_mb": 64000, "memory_free_mb": 60000},
        ]
    }
    assert hive_heartbeat(hive_id=hive.pk, channel_name="specific.box!1", beat=beat)
    beat["devices"][0]["memory_used_mb"] = 5000
    assert hive_heartbeat(hive_id=hive.pk, channel_name="specific.box!1", beat=beat)
    rows = sorted(
        DeviceSample.objects.values_list(
            "device", "memory_used_mb", "memory_total_mb", "utilization"
        )
    )
    # The first heartbeat of the minute is kept; the CPU's used memory is total - free.
    assert rows == [("cpu", 4000, 64000, None), ("cuda:0", 1000, 24564, 7.0)]
    # A heartbeat of another connection records nothing.
    assert not hive_heartbeat(hive_id=hive.pk, channel_name="someone.else", beat=beat)
    assert DeviceSample.objects.count() == 2
    # The next minute gets its own sample.
    later = timezone.now() + timedelta(minutes=1)
    device_samples_record(hive=hive, devices=[{**GPU, "memory_used_mb": 5000}], at=later)
    assert DeviceSample.objects.filter(device="cuda:0").count() == 2
    # Another queen's sample of the same minute is not a second row (nor an error).
    DeviceSample.objects.filter(minute=later.replace(second=0, microsecond=0)).update(
        memory_used_mb=1
    )
    from hives import services

    services._sampled.clear()
    device_samples_record(hive=hive, devices=[{**GPU, "memory_used_mb": 9}], at=later)
    assert list(
        DeviceSample.objects.filter(device="cuda:0")
        .order_by("minute")
        .values_list("memory_used_mb", flat=True)
    ) == [1000, 1]


@pytest.mark.django_db
def test_metrics_older_than_the_retention_are_pruned(settings: Any) -> None:
    settings.RBEE_METRICS_RETENTION_DAYS = 14
    now = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    hive = _hive()
    for days in (15, 14.01, 13.99, 0):
        minute = (now - timedelta(days=days)).replace(second=0, microsecond=0)
        RequestStat.objects.create(minute=minute, model="chat", requests=1)
        DeviceSample.objects.create(hive=hive, device="cuda:0", minute=minute)
    assert prune(now) == (2, 2)
    cutoff = now - timedelta(days=14)
    assert sorted(RequestStat.objects.values_list("minute", flat=True)) == sorted(
        DeviceSample.objects.values_list("minute", flat=True)
    )
    assert all(m >= cutoff for m in RequestStat.objects.values_list("minute", flat=True))
    assert RequestStat.objects.count() == 2 and DeviceSample.objects.count() == 2


def _place(channel: str) -> Placement:
    return Placement(
        worker_id=1, hive_id=1, hive_name="h1", channel_name=channel, device="cpu", inflight=0
    )


async def _serve(channel: str, events: list[dict[str, Any]]) -> None:
    layer = get_channel_layer()
    msg = await layer.receive(channel)
    await layer.send(msg["reply"], {"type": "job.ack", "hive_id": 1})
    await asyncio.sleep(0.05)  # the worker takes a moment before its first token
    await layer.send(msg["reply"], {"type": "job.events", "hive_id": 1, "events": events})


def _mine(model: str) -> Sums:
    found = [s for (_, m), s in stats.rollup.take().items() if m == model]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.asyncio
async def test_a_finished_job_counts_in_this_queens_sums(settings: Any) -> None:
    """What the pipeline's jobs measure (inference/dispatch.py): time to the first text
    from the request's arrival, the queue wait it was given, the worker's completion
    tokens and its time; a job that fails counts as an error with no tokens."""
    settings.RBEE_DISPATCH_ACK_TIMEOUT = 1.0
    settings.RBEE_JOB_IDLE_TIMEOUT = 2.0
    layer = get_channel_layer()
    done = {"kind": "done", "finish_reason": "stop", "usage": {"completion_tokens": 3}}
    channel = await layer.new_channel()
    hive = asyncio.create_task(_serve(channel, [{"kind": "delta", "text": "a b c"}, done]))
    arrived = time.monotonic() - 0.1  # it arrived 100 ms ago and queued for 12.5 ms
    job = Job(
        job_id="s1",
        model="stats-chat",
        task="chat",
        request={},
        placements=[_place(channel)],
        arrived=arrived,
        queue_wait_ms=12.5,
    )
    assert [e["kind"] async for e in job.events()] == ["delta", "done"]
    await hive
    got = _mine("stats-chat")
    assert (got.requests, got.errors, got.ttft_count, got.output_tokens) == (1, 0, 1, 3)
    assert got.queue_wait_ms_sum == 12.5
    assert 150 <= got.ttft_ms_sum < 2000  # 100 ms before dispatch + the worker's 50 ms
    assert 0.05 <= got.generation_seconds < 2

    channel = await layer.new_channel()
    failed = {"kind": "error", "message": "boom", "code": "worker_error", "status": 500}
    hive = asyncio.create_task(_serve(channel, [failed]))
    job = Job(
        job_id="s2",
        model="stats-chat",
        task="chat",
        request={},
        placements=[_place(channel)],
        arrived=time.monotonic(),
    )
    assert [e["kind"] async for e in job.events()] == ["error"]
    await hive
    got = _mine("stats-chat")
    assert (got.requests, got.errors, got.ttft_count, got.output_tokens) == (1, 1, 0, 0)
    assert got.generation_seconds == 0.0

    # A job the pipeline did not start (no arrival time) is not counted.
    channel = await layer.new_channel()
    hive = asyncio.create_task(_serve(channel, [done]))
    job = Job(
        job_id="s3", model="stats-chat", task="chat", request={}, placements=[_place(channel)]
    )
    assert [e["kind"] async for e in job.events()] == ["done"]
    await hive
    assert [m for (_, m) in stats.rollup.pending() if m == "stats-chat"] == []
