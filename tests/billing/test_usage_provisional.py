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
from django.db.models.functions import Now
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
    name, _pidns, boot = host.split("/")
    assert not instance_gone(f"{name}/1/{boot}:{dead_pid()}:deadbeef0000")
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
    assert UsageEvent.objects.count() == 4 and alive.pk


def test_the_machine_is_the_boot_id_else_the_machine_id_else_a_token_of_this_process(
    tmp_path: Any,
) -> None:
    from kernel.process import machine_token

    boot, machine, empty = tmp_path / "boot_id", tmp_path / "machine-id", tmp_path / "empty"
    boot.write_text("1e51ab68-4dc4-4b7f-ab5a-e9c51b1cb1e7\n")
    machine.write_text("0f1e2d3c4b5a69788796a5b4c3d2e1f0\n")
    empty.write_text("")
    missing = str(tmp_path / "missing")
    by_boot = machine_token(str(boot), str(machine))
    assert by_boot == machine_token(str(boot), missing)  # the boot id comes first
    assert len(by_boot) == 16 and not by_boot.startswith("r")
    by_machine = machine_token(missing, str(machine))
    assert by_machine == machine_token(str(empty), str(machine)) != by_boot
    # Neither: a random token, matched by no other process.
    alone = {machine_token(missing, str(empty)), machine_token(missing, missing)}
    assert len(alone) == 2 and all(t.startswith("r") and len(t) == 16 for t in alone)
    # This process's identity names this boot, and fits the row's column whole.
    assert f"/{machine_token()}:" in instance_id()
    assert len(instance_id()) <= UsageEvent._meta.get_field("queen").max_length


@pytest.mark.django_db
def test_a_row_of_another_boot_is_settled_by_its_lease_never_by_its_pid_number() -> None:
    """Two replicas with the same host name (compose `hostname: queen`) on two nodes, pid 1
    in the same-numbered pid namespace on each: a pid number seen from the other node says
    nothing, so a live request there is left alone until its heartbeat is older than the
    lease; only a row of this very boot is judged by its pid."""
    tenant = Tenant.objects.create(name="acme")
    where, _pid, _token = instance_id().rsplit(":", 2)
    name, pidns, _boot = where.split("/")
    other_boot = f"{name}/{pidns}/0123456789abcdef"
    older_form = f"{name}/{pidns}"  # written before the boot was part of the identity
    rows = {
        "r-other-mypid": f"{other_boot}:{os.getpid()}:cafe00000001",
        "r-other-dead": f"{other_boot}:{dead_pid()}:cafe00000002",
        "r-older-mypid": f"{older_form}:{os.getpid()}:cafe00000003",
        "r-older-dead": f"{older_form}:{dead_pid()}:cafe00000004",
    }
    for queen in rows.values():
        assert not instance_gone(queen), queen
    for request_id, queen in rows.items():
        begin(tenant, request_id, queen)
    gone = begin(tenant, "r-this-boot-dead", f"{where}:{dead_pid()}:cafe00000005")
    assert instance_gone(gone.queen)
    # Heartbeats fresh: only the row of this boot whose process is gone is settled.
    assert [s.request_id for s in usage_settle_stale(lease_s=120)] == ["r-this-boot-dead"]
    assert set(
        UsageEvent.objects.filter(outcome=PROVISIONAL).values_list("request_id", flat=True)
    ) == set(rows)
    # Once their heartbeats are older than the lease, the lease settles them.
    UsageEvent.objects.filter(outcome=PROVISIONAL).update(
        heartbeat_at=Now() - timedelta(seconds=121)
    )
    assert sorted(s.request_id for s in usage_settle_stale(lease_s=120)) == sorted(rows)


@pytest.mark.django_db
def test_the_lease_is_judged_by_the_database_clock_not_the_queens(monkeypatch: Any) -> None:
    """Queens whose clocks are off by more than the lease neither settle each other's
    live rows nor keep dead rows alive: heartbeats are written with the database's clock
    and the cutoff is computed with it."""
    from django.utils import timezone as tz

    real_now = tz.now
    tenant = Tenant.objects.create(name="acme")
    elsewhere = "another-host/4026531836/0123456789abcdef:1:cafe00000001"

    # A queen whose clock is ten minutes behind writes a heartbeat...
    monkeypatch.setattr(tz, "now", lambda: real_now() - timedelta(minutes=10))
    begin(tenant, "r-behind", elsewhere)
    # ...and one whose clock is ten minutes ahead runs the settler: neither row is stale.
    monkeypatch.setattr(tz, "now", lambda: real_now() + timedelta(minutes=10))
    fresh = begin(tenant, "r-fresh", elsewhere)
    UsageEvent.objects.filter(pk=fresh.pk).update(heartbeat_at=Now())
    assert usage_settle_stale(lease_s=120) == []
    # A heartbeat the database dates 10 minutes back is stale, even for a queen whose
    # clock is 10 minutes behind.
    monkeypatch.setattr(tz, "now", lambda: real_now() - timedelta(minutes=10))
    UsageEvent.objects.filter(pk=fresh.pk).update(heartbeat_at=Now() - timedelta(minutes=10))
    assert [s.request_id for s in usage_settle_stale(lease_s=120)] == ["r-fresh"]
    assert UsageEvent.objects.get(request_id="r-behind").outcome == PROVISIONAL


@pytest.mark.django_db
def test_a_final_write_after_an_interrupted_settle_records_the_real_counts_once(
    redis_settings: Any,
) -> None:
    """A request settled as interrupted while it was in fact alive: its final write
    replaces the heartbeat's counts once, Stripe's outbox gets the difference (so the
    meter sums to the final counts, whether or not the interrupted events were sent), and
    the limiter counts the final figures; a repeated write changes nothing."""
    tenant = Tenant.objects.create(name="acme", stripe_customer_id="cus_1")
    limits = lim.Limits(tokens_per_day=10_000)
    limiter = lim.get_limiter()
    loop = asyncio.new_event_loop()
    try:
        decision = loop.run_until_complete(
            limiter.admit(str(tenant.pk), limits, lim.Cost(tokens=800))
        )
        host = instance_id().rsplit(":", 2)[0]
        begin(tenant, "r-late", f"{host}:{dead_pid()}:deadbeef0000", ticket=decision.ticket)
        UsageEvent.objects.filter(request_id="r-late").update(
            prompt_tokens=20, completion_tokens=30
        )
        assert settle_stale_usage(loop) == 1
        MeterEvent.objects.filter(identifier="r-late:prompt_tokens").update(
            sent_at=timezone.now()  # one of them reached Stripe already
        )
        used = loop.run_until_complete(limiter.usage(str(tenant.pk)))
        assert used["tokens"] == 50

        def final(prompt: int, completion: int) -> UsageEvent:
            return usage_record(
                request_id="r-late",
                tenant_id=tenant.pk,
                api_key_id=None,
                model="m1",
                modality="chat",
                usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
                worker="h1/cpu",
            )

        row = final(18, 90)  # the worker's count of the prompt differs from the estimate
        assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", 18, 90)
        assert (final(1, 1).outcome, final(1, 1).completion_tokens) == ("ok", 90)
        row.refresh_from_db()
        assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", 18, 90)
        assert row.heartbeat_at is None and row.worker == "h1/cpu"
        outbox = dict(MeterEvent.objects.filter(usage=row).values_list("identifier", "value"))
        assert outbox == {
            "r-late:prompt_tokens": Decimal(20),
            "r-late:completion_tokens": Decimal(30),
            "r-late:prompt_tokens:final": Decimal(-2),
            "r-late:completion_tokens:final": Decimal(60),
        }
        # The settler has nothing more to do with it.
        assert usage_settle_stale(lease_s=0) == []
        # The limiter: the Meter settles the ticket with the final figures, once.
        for _ in range(2):
            loop.run_until_complete(
                limiter.settle(str(tenant.pk), decision.ticket, lim.Cost(requests=1, tokens=108))
            )
        used = loop.run_until_complete(limiter.usage(str(tenant.pk)))
        assert (used["requests"], used["tokens"]) == (1, 108)
    finally:
        loop.run_until_complete(limiter.aclose())  # type: ignore[attr-defined]
        loop.close()


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


@pytest.mark.django_db(transaction=True)
async def test_a_request_taken_for_dead_keeps_its_slot_and_its_final_counts(
    executor: None, redis_settings: Any
) -> None:
    """The Meter of a request the settler settled as interrupted (its row said its queen
    was gone): its heartbeat takes its concurrency slot back, and its end records and
    settles the final figures, so the tenant's day counts what was really used."""
    redis_settings.RBEE_USAGE_HEARTBEAT_SECONDS = 0.1
    tenant = await in_thread(Tenant.objects.create, name="acme")
    limits = lim.Limits(max_concurrent=1, tokens_per_day=10_000)
    limiter = lim.get_limiter()
    try:
        first = await limiter.admit(str(tenant.pk), limits, lim.Cost(tokens=800))
        meter = Meter(
            Admitted(caller=caller(tenant.pk), ticket=first.ticket),
            request_id="r-6",
            model="m1",
            modality="chat",
        )
        await meter.begin()
        meter.progress(20, 30)
        host = instance_id().rsplit(":", 2)[0]
        await in_thread(  # as if it were a dead process's row
            lambda: UsageEvent.objects.filter(request_id="r-6").update(
                queen=f"{host}:{dead_pid()}:deadbeef0000"
            )
        )
        for _ in range(100):
            row = await in_thread(UsageEvent.objects.get, request_id="r-6")
            if row.completion_tokens == 30:
                break
            await asyncio.sleep(0.05)
        settled = await in_thread(settle_stale_usage)
        assert settled == 1
        assert (await limiter.usage(str(tenant.pk)))["tokens"] == 50
        await asyncio.sleep(0.5)  # a few heartbeats: the slot is held again
        assert not (await limiter.admit(str(tenant.pk), limits, lim.Cost())).allowed
        await meter.finish({"prompt_tokens": 20, "completion_tokens": 90}, "ok", "h1/cpu")
        row = await in_thread(UsageEvent.objects.get, request_id="r-6")
        assert (row.outcome, row.prompt_tokens, row.completion_tokens) == ("ok", 20, 90)
        used = await limiter.usage(str(tenant.pk))
        assert (used["requests"], used["tokens"]) == (1, 110)
        assert (await limiter.admit(str(tenant.pk), limits, lim.Cost())).allowed
    finally:
        await limiter.aclose()  # type: ignore[attr-defined]
