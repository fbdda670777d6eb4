"""Usage survives a crash: a provisional row from admission (billing.services.usage_begin,
Meter.begin), refreshed while the job runs, finalised exactly once at its end, settled as
`interrupted` when its queen is gone or its heartbeat is older than the lease; a failed
final write is retried; interrupted usage is billed, provisional usage is not yet; a
running request renews its concurrency lease. Real PostgreSQL (or SQLite) and Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from billing import limits as lim
from billing.gate import Admitted, Meter
from billing.invoices import invoice_lines
from billing.models import MeterEvent, Price, UsageEvent
from billing.periodic import settle_stale_usage
from billing.selectors import usage_csv, usage_summary
from billing.services import Usage, usage_begin, usage_record, usage_settle_stale
from kernel.process import instance_gone, instance_id
from tenants.models import Tenant
from tenants.selectors import Caller

REDIS_URL = os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0"
PROVISIONAL = UsageEvent.Outcome.PROVISIONAL
INTERRUPTED = UsageEvent.Outcome.INTERRUPTED


def caller(tenant_id: int) -> Caller:
    return Caller(
        tenant_id=tenant_id, tenant_name="acme", tier="free", api_key_id=None, api_key_prefix=""
    )


def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def begin(tenant: Tenant, request_id: str, queen: str, *, ticket: str = "") -> UsageEvent:
    usage_begin(
        request_id=request_id,
        tenant_id=tenant.pk,
        api_key_id=None,
        model="m1",
        modality="chat",
        queen=queen,
        ticket=ticket,
    )
    return UsageEvent.objects.get(request_id=request_id)


@pytest.fixture
async def executor() -> AsyncIterator[None]:
    """Run the Meter's database calls on executor threads whose connections are closed at
    the end (or the test database could not be dropped)."""
    pool = ThreadPoolExecutor(max_workers=4)
    asyncio.get_running_loop().set_default_executor(pool)
    yield
    barrier = threading.Barrier(4)  # one close on each of the four threads

    def close() -> None:
        barrier.wait(10)
        connections.close_all()

    for _ in range(4):
        pool.submit(close)
    pool.shutdown(wait=True)


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


# --- the row's life ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_request_is_provisional_from_admission_and_final_once_at_its_end(
    executor: None, settings: Any
) -> None:
    settings.RBEE_USAGE_HEARTBEAT_SECONDS = 0.1
    tenant = await in_thread(Tenant.objects.create, name="acme", stripe_customer_id="cus_1")
    meter = Meter(Admitted(caller=caller(tenant.pk)), request_id="r-1", model="m1", modality="chat")
    await meter.begin()
    row = await in_thread(UsageEvent.objects.get, request_id="r-1")
    assert (row.outcome, row.queen, row.tenant_id) == (PROVISIONAL, instance_id(), tenant.pk)
    assert row.heartbeat_at is not None and row.completion_tokens == 0
    # While it runs, the heartbeat brings the running counts to the row.
    meter.progress(7, 3)
    for _ in range(100):
        row = await in_thread(UsageEvent.objects.get, request_id="r-1")
        if row.completion_tokens == 3:
            break
        await asyncio.sleep(0.05)
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == (PROVISIONAL, 7, 3)
    # Provisional usage is not sent to Stripe yet.
    assert not await in_thread(lambda: MeterEvent.objects.filter(usage=row).exists())

    await meter.finish({"prompt_tokens": 7, "completion_tokens": 5}, "ok", "h1/cpu")
    await meter.finish({"prompt_tokens": 70, "completion_tokens": 50}, "ok", "h1/cpu")
    row = await in_thread(UsageEvent.objects.get, request_id="r-1")
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", 7, 5)
    assert row.heartbeat_at is None and row.worker == "h1/cpu"
    # A later record of the same request (another path, a retry) changes nothing.
    again = await in_thread(
        usage_record,
        request_id="r-1",
        tenant_id=tenant.pk,
        api_key_id=None,
        model="m1",
        modality="chat",
        usage=Usage(prompt_tokens=1000),
        outcome="error",
    )
    assert (again.outcome, again.prompt_tokens) == ("ok", 7)
    sent = await in_thread(
        lambda: sorted(MeterEvent.objects.filter(usage=row).values_list("identifier", "value"))
    )
    assert sent == [("r-1:completion_tokens", Decimal(5)), ("r-1:prompt_tokens", Decimal(7))]
    assert await in_thread(UsageEvent.objects.count) == 1


@pytest.mark.django_db
def test_stale_rows_are_settled_as_interrupted_once_with_their_last_counts() -> None:
    tenant = Tenant.objects.create(name="acme", stripe_customer_id="cus_1")
    host = instance_id().rsplit(":", 2)[0]
    gone = f"{host}:{dead_pid()}:deadbeef0000"
    elsewhere = "another-host:12:cafe"
    assert instance_gone(gone) and not instance_gone(elsewhere)
    assert not instance_gone(instance_id())
    # Same host name, another pid namespace (containers sharing the host's name): its pids
    # mean nothing here, so its rows wait for their lease.
    assert not instance_gone(f"{host.rpartition('/')[0]}/1:{dead_pid()}:deadbeef0000")
    dead = begin(tenant, "r-dead", gone)  # its queen died on this host: settled at once
    quiet = begin(tenant, "r-quiet", elsewhere)  # no heartbeat for longer than the lease
    alive = begin(tenant, "r-alive", elsewhere)  # heartbeat fresh: still running elsewhere
    mine = begin(tenant, "r-mine", instance_id())  # this process's own, running
    old = timezone.now() - timedelta(seconds=600)
    UsageEvent.objects.filter(pk__in=[quiet.pk, mine.pk]).update(heartbeat_at=old)
    UsageEvent.objects.filter(pk=dead.pk).update(prompt_tokens=9, completion_tokens=4)

    settled = usage_settle_stale(lease_s=120)
    assert sorted(s.request_id for s in settled) == ["r-dead", "r-mine", "r-quiet"]
    by_id = {s.request_id: s for s in settled}
    assert by_id["r-dead"].usage == Usage(prompt_tokens=9, completion_tokens=4)
    outcomes = dict(UsageEvent.objects.values_list("request_id", "outcome"))
    assert outcomes == {
        "r-dead": INTERRUPTED,
        "r-quiet": INTERRUPTED,
        "r-mine": INTERRUPTED,
        "r-alive": PROVISIONAL,
    }
    dead.refresh_from_db()
    assert (dead.prompt_tokens, dead.completion_tokens) == (9, 4)
    # Its Stripe rows are written with it, once.
    assert sorted(MeterEvent.objects.filter(usage=dead).values_list("identifier", flat=True)) == [
        "r-dead:completion_tokens",
        "r-dead:prompt_tokens",
    ]
    assert usage_settle_stale(lease_s=120) == []
    # A late final write (the queen was only slow) does not count the request twice.
    late = usage_record(
        request_id="r-quiet",
        tenant_id=tenant.pk,
        api_key_id=None,
        model="m1",
        modality="chat",
        usage=Usage(prompt_tokens=5, completion_tokens=5),
    )
    assert (late.outcome, late.prompt_tokens) == (INTERRUPTED, 0)
    assert UsageEvent.objects.count() == 4 and alive.pk


@pytest.mark.django_db
def test_interrupted_usage_is_billed_and_provisional_usage_not_yet() -> None:
    tenant = Tenant.objects.create(name="acme")
    Price.objects.create(model="m1", unit="completion_tokens", unit_price=Decimal("0.5"))
    host = instance_id().rsplit(":", 2)[0]
    begin(tenant, "r-int", f"{host}:{dead_pid()}:deadbeef0000")
    begin(tenant, "r-run", "another-host:12:cafe")
    UsageEvent.objects.update(completion_tokens=10)
    usage_record(
        request_id="r-ok",
        tenant_id=tenant.pk,
        api_key_id=None,
        model="m1",
        modality="chat",
        usage=Usage(completion_tokens=2),
    )
    usage_settle_stale(lease_s=120)
    now = datetime.now(UTC)
    start, end = now - timedelta(days=1), now + timedelta(days=1)
    summary = usage_summary(tenant_id=tenant.pk, start=start, end=end, group_by="model")
    assert [(r["requests"], r["completion_tokens"]) for r in summary] == [
        (2, 12)
    ]  # ok + interrupted
    lines = list(usage_csv(tenant_id=tenant.pk, start=start, end=end))
    assert len(lines) == 3 and any(",interrupted," in line for line in lines)
    assert not any("r-run" in line for line in lines)
    _lines, total, _currency = invoice_lines(tenant=tenant, year=now.year, month=now.month)
    assert total == Decimal(6)


# --- a final write that fails --------------------------------------------------------


def _lock_row(request_id: str, locked: threading.Event, release: threading.Event) -> None:
    """Hold a write lock on the row from another connection until `release`."""
    from django.db import transaction

    try:
        with transaction.atomic():
            if connection.vendor == "sqlite":
                UsageEvent.objects.filter(request_id=request_id).update(latency_ms=1)
            else:
                list(UsageEvent.objects.select_for_update().filter(request_id=request_id))
            locked.set()
            release.wait(30)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
async def test_a_final_write_that_fails_is_retried_and_never_lost(
    executor: None, settings: Any
) -> None:
    settings.RBEE_DB_TIMEOUT = 0.5  # a database that does not answer in time
    tenant = await in_thread(Tenant.objects.create, name="acme")
    meter = Meter(Admitted(caller=caller(tenant.pk)), request_id="r-2", model="m1", modality="chat")
    await meter.begin()
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_lock_row, args=("r-2", locked, release))
    holder.start()
    try:
        assert locked.wait(10)
        meter.progress(4, 2)
        await meter.finish({"prompt_tokens": 4, "completion_tokens": 3}, "ok", "h1/cpu")
        # The write could not be made: the row is still there, provisional.
        row = await in_thread(UsageEvent.objects.get, request_id="r-2")
        assert row.outcome == PROVISIONAL
    finally:
        release.set()
        holder.join()
    for _ in range(100):  # the retry (backoff 0.5 s, 1 s, 2 s) lands once the lock is gone
        row = await in_thread(UsageEvent.objects.get, request_id="r-2")
        if row.outcome != PROVISIONAL:
            break
        await asyncio.sleep(0.1)
    assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", 4, 3)


# --- the limiter: reservations of interrupted requests, leases of running ones -------


@pytest.fixture
def redis_settings(settings: Any) -> Iterator[Any]:
    settings.REDIS_URL = REDIS_URL
    settings.RBEE_LIMITS_PREFIX = f"rbee:test:usage:{uuid.uuid4().hex[:12]}"
    yield settings
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{settings.RBEE_LIMITS_PREFIX}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.mark.django_db
def test_settling_an_interrupted_request_settles_its_reservation(redis_settings: Any) -> None:
    tenant = Tenant.objects.create(name="acme")
    limits = lim.Limits(tokens_per_day=1000, max_concurrent=1)
    limiter = lim.get_limiter()
    loop = asyncio.new_event_loop()
    try:
        decision = loop.run_until_complete(
            limiter.admit(str(tenant.pk), limits, lim.Cost(tokens=800))
        )
        assert decision.allowed
        host = instance_id().rsplit(":", 2)[0]
        begin(tenant, "r-3", f"{host}:{dead_pid()}:deadbeef0000", ticket=decision.ticket)
        UsageEvent.objects.filter(request_id="r-3").update(prompt_tokens=20, completion_tokens=30)
        assert settle_stale_usage(loop) == 1
        used = loop.run_until_complete(limiter.usage(str(tenant.pk)))
        # The 800 reserved became the 50 used, and the slot is free again.
        assert (used["requests"], used["tokens"]) == (1, 50)
        again = loop.run_until_complete(limiter.admit(str(tenant.pk), limits, lim.Cost(tokens=900)))
        assert again.allowed
    finally:
        loop.run_until_complete(limiter.aclose())  # type: ignore[attr-defined]
        loop.close()


@pytest.mark.django_db(transaction=True)
async def test_a_running_request_keeps_its_slot_past_the_concurrency_lease(
    executor: None, redis_settings: Any
) -> None:
    redis_settings.RBEE_CONCURRENCY_LEASE_SECONDS = 1.0
    redis_settings.RBEE_USAGE_HEARTBEAT_SECONDS = 0.2
    tenant = await in_thread(Tenant.objects.create, name="acme")
    who = caller(tenant.pk)
    limits = lim.Limits(max_concurrent=1)
    limiter = lim.get_limiter()
    try:
        first = await limiter.admit(str(tenant.pk), limits, lim.Cost())
        meter = Meter(
            Admitted(caller=who, ticket=first.ticket), request_id="r-4", model="m1", modality="chat"
        )
        await meter.begin()
        await asyncio.sleep(2.5)  # a job running for more than twice the lease
        second = await limiter.admit(str(tenant.pk), limits, lim.Cost())
        assert not second.allowed and second.reason == "concurrency"
        await meter.finish({"completion_tokens": 1}, "ok")
        third = await limiter.admit(str(tenant.pk), limits, lim.Cost())
        assert third.allowed
    finally:
        await limiter.aclose()  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_every_queen_settles_stale_rows_periodically(settings: Any) -> None:
    from billing.periodic import start_usage_settler

    settings.RBEE_USAGE_SETTLE_SECONDS = 0.2
    settings.RBEE_USAGE_LEASE_SECONDS = 1.0
    tenant = Tenant.objects.create(name="acme")
    begin(tenant, "r-5", "another-host:12:cafe")  # a queen elsewhere, heartbeat fresh
    stop = start_usage_settler()
    try:
        # Still running as far as anyone can tell: left alone while its lease lasts...
        assert UsageEvent.objects.get(request_id="r-5").outcome == PROVISIONAL
        # ...and settled by a later pass once its heartbeat is older than the lease.
        deadline = timezone.now() + timedelta(seconds=15)
        while UsageEvent.objects.get(request_id="r-5").outcome == PROVISIONAL:
            assert timezone.now() < deadline, "the settler never settled the stale row"
            threading.Event().wait(0.1)
    finally:
        stop.set()
    connections.close_all()
