"""The daily usage roll-up (billing.models.UsageDaily) equals the raw aggregate of the
usage events that count after every write path: admission (provisional: nothing yet),
heartbeats, finalisation, a final row made at once, a settle as interrupted, a late final
write correcting an interrupted one, a repeated final write; after concurrent writers
(threads on real PostgreSQL); after a key is deleted, an end user erased and old rows
purged by retention; and `rbee billing rollup --rebuild` restores it from the raw rows."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest
from click.testing import CliRunner
from django.db import connection, connections
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from billing.models import UNITS, UsageDaily, UsageEvent
from billing.services import (
    Usage,
    usage_begin,
    usage_progress,
    usage_record,
    usage_rollup_rebuild,
    usage_settle_stale,
)
from gdpr import subjects
from kernel.process import instance_id
from tenants.models import ApiKey, Tenant

Group = tuple[int, date, str, int, str]


def raw() -> dict[Group, tuple[Any, ...]]:
    """What counts, summed from the raw events per roll-up group (rows with nothing in
    them left out)."""
    rows = (
        UsageEvent.objects.exclude(outcome=UsageEvent.Outcome.PROVISIONAL)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("tenant_id", "day", "model", "api_key_id", "modality")
        .annotate(requests=Count("id"), **{u: Sum(u) for u in UNITS})
        .order_by()
    )
    out = {}
    for item in rows:
        r = cast(dict[str, Any], item)
        group = (r["tenant_id"], r["day"], r["model"], r["api_key_id"] or 0, r["modality"])
        out[group] = (r["requests"], *(round(float(r[u] or 0), 6) for u in UNITS))
    return out


def rolled() -> dict[Group, tuple[Any, ...]]:
    out = {}
    for item in UsageDaily.objects.values():
        r = cast(dict[str, Any], item)
        sums = (r["requests"], *(round(float(r[u]), 6) for u in UNITS))
        if any(sums):
            out[(r["tenant_id"], r["day"], r["model"], r["key_id"], r["modality"])] = sums
    return out


def consistent() -> dict[Group, tuple[Any, ...]]:
    expected = raw()
    assert rolled() == expected
    return expected


def dead_queen() -> str:
    pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{instance_id().rsplit(':', 2)[0]}:{pid}:deadbeef0000"


def final(tenant: Tenant, rid: str, key: ApiKey | None = None, **usage: Any) -> UsageEvent:
    return usage_record(
        request_id=rid,
        tenant_id=tenant.pk,
        api_key_id=key.pk if key else None,
        model="m1",
        modality="chat",
        usage=Usage(**usage),
    )


def begin(tenant: Tenant, rid: str, queen: str, key: ApiKey | None = None) -> None:
    usage_begin(
        request_id=rid,
        tenant_id=tenant.pk,
        api_key_id=key.pk if key else None,
        model="m1",
        modality="chat",
        queen=queen,
    )


@pytest.mark.django_db
def test_every_write_path_keeps_the_rollup_equal_to_the_raw_aggregate() -> None:
    acme = Tenant.objects.create(name="acme")
    key = ApiKey.objects.create(tenant=acme, prefix="abc", key_hash="x" * 64)
    today = datetime.now(UTC).date()
    # Admitted and running: provisional, counted nowhere (the roll-up has nothing).
    begin(acme, "r-1", instance_id(), key)
    assert usage_progress(request_id="r-1", usage=Usage(prompt_tokens=7, completion_tokens=3))
    assert consistent() == {} and UsageDaily.objects.count() == 0
    # Finalised once: one request with its final counts.
    final(acme, "r-1", key, prompt_tokens=7, completion_tokens=5)
    assert consistent() == {(acme.pk, today, "m1", key.pk, "chat"): (1, 7.0, 5.0, 0, 0, 0, 0)}
    # A repeated final write of the same request changes nothing.
    final(acme, "r-1", key, prompt_tokens=700, completion_tokens=500)
    assert rolled()[(acme.pk, today, "m1", key.pk, "chat")] == (1, 7.0, 5.0, 0, 0, 0, 0)
    # A request without a provisional row, keyless, with audio: made final at once.
    usage_record(
        request_id="r-2",
        tenant_id=acme.pk,
        api_key_id=None,
        model="whisper",
        modality="transcription",
        usage=Usage(audio_seconds=12.25),
    )
    # Settled as interrupted (its queen died) with its heartbeat's counts.
    begin(acme, "r-3", dead_queen(), key)
    usage_progress(request_id="r-3", usage=Usage(prompt_tokens=20, completion_tokens=30))
    assert [s.request_id for s in usage_settle_stale(lease_s=600)] == ["r-3"]
    assert consistent() == {
        (acme.pk, today, "m1", key.pk, "chat"): (2, 27.0, 35.0, 0, 0, 0, 0),
        (acme.pk, today, "whisper", 0, "transcription"): (1, 0, 0, 0, 12.25, 0, 0),
    }
    # Its late final write replaces the interrupted counts: the difference, no request.
    late = final(acme, "r-3", key, prompt_tokens=18, completion_tokens=90)
    assert (late.outcome, late.prompt_tokens, late.completion_tokens) == ("ok", 18, 90)
    assert consistent()[(acme.pk, today, "m1", key.pk, "chat")] == (2, 25.0, 95.0, 0, 0, 0, 0)
    # ...once: another final write is ignored, and the settler finds nothing more.
    final(acme, "r-3", key, prompt_tokens=1, completion_tokens=1)
    assert usage_settle_stale(lease_s=0) == []
    assert consistent()[(acme.pk, today, "m1", key.pk, "chat")] == (2, 25.0, 95.0, 0, 0, 0, 0)
    # A row still provisional beside them adds nothing.
    begin(acme, "r-4", instance_id())
    usage_progress(request_id="r-4", usage=Usage(completion_tokens=9))
    assert len(consistent()) == 2


@pytest.mark.django_db
def test_an_error_or_disconnect_counts_and_a_zero_usage_request_still_counts_one() -> None:
    acme = Tenant.objects.create(name="acme")
    today = datetime.now(UTC).date()
    usage_record(
        request_id="r-e",
        tenant_id=acme.pk,
        api_key_id=None,
        model="m1",
        modality="chat",
        usage=Usage(),
        outcome=UsageEvent.Outcome.ERROR,
    )
    begin(acme, "r-d", instance_id())
    usage_record(
        request_id="r-d",
        tenant_id=acme.pk,
        api_key_id=None,
        model="m1",
        modality="chat",
        usage=Usage(prompt_tokens=4, completion_tokens=2),
        outcome=UsageEvent.Outcome.DISCONNECTED,
    )
    assert consistent() == {(acme.pk, today, "m1", 0, "chat"): (2, 4.0, 2.0, 0, 0, 0, 0)}


@pytest.mark.django_db
def test_deleting_a_key_makes_its_rollup_keyless_and_deleting_a_tenant_takes_it_along() -> None:
    acme = Tenant.objects.create(name="acme")
    other = Tenant.objects.create(name="other")
    k1 = ApiKey.objects.create(tenant=acme, prefix="k1", key_hash="x" * 64)
    k2 = ApiKey.objects.create(tenant=acme, prefix="k2", key_hash="y" * 64)
    final(acme, "a", k1, prompt_tokens=1)
    final(acme, "b", k2, prompt_tokens=10)
    final(acme, "c", None, prompt_tokens=100)
    final(other, "d", None, prompt_tokens=1000)
    k1.delete()
    today = datetime.now(UTC).date()
    assert consistent() == {
        (acme.pk, today, "m1", 0, "chat"): (2, 101.0, 0, 0, 0, 0, 0),
        (acme.pk, today, "m1", k2.pk, "chat"): (1, 10.0, 0, 0, 0, 0, 0),
        (other.pk, today, "m1", 0, "chat"): (1, 1000.0, 0, 0, 0, 0, 0),
    }
    ApiKey.objects.filter(pk=k2.pk).delete()  # a queryset's delete too
    assert consistent()[(acme.pk, today, "m1", 0, "chat")] == (3, 111.0, 0, 0, 0, 0, 0)
    acme.delete()  # its keys and roll-up go with it (nothing merged into a dead tenant)
    assert consistent() == {(other.pk, today, "m1", 0, "chat"): (1, 1000.0, 0, 0, 0, 0, 0)}


@pytest.mark.django_db
def test_erasing_an_end_user_keeps_the_rollup_consistent(tmp_path: Any, monkeypatch: Any) -> None:
    from billing.gdpr import usage_erase

    acme = Tenant.objects.create(name="acme")
    for i, who in enumerate(("u-1", "u-1", "u-2")):
        usage_record(
            request_id=f"r{i}",
            tenant_id=acme.pk,
            api_key_id=None,
            model="m1",
            modality="chat",
            usage=Usage(completion_tokens=i + 1),
            end_user=who,
        )
    before = consistent()
    erased = usage_erase(subjects.end_user("acme", "u-1"))
    assert erased.pseudonymised == 2
    assert UsageEvent.objects.filter(end_user="u-1").count() == 0
    assert consistent() == before  # the rows stay (books), so does their roll-up


@pytest.mark.django_db
def test_retention_purges_old_days_from_the_rollup_and_keeps_held_rows(
    tmp_path: Any, monkeypatch: Any
) -> None:
    from gdpr import audit, retention

    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    de = Tenant.objects.create(name="de-co", jurisdiction="DE")
    for rid, years, who in (("old-a", 11, ""), ("old-b", 11, "u-9"), ("new", 1, "")):
        usage_record(
            request_id=rid,
            tenant_id=de.pk,
            api_key_id=None,
            model="m1",
            modality="chat",
            usage=Usage(prompt_tokens=5),
            end_user=who,
        )
        when = now - timedelta(days=years * 365.25)
        UsageEvent.objects.filter(request_id=rid).update(created_at=when)
    usage_rollup_rebuild()  # the rows were dated by hand: the roll-up follows them
    assert len(consistent()) == 2
    retention.hold_place(reason="dispute", actor="cli", subject=subjects.end_user("de-co", "u-9"))
    run = retention.run(now=now)
    assert (run.results["billing.usage"].deleted, run.results["billing.usage"].held) == (1, 1)
    assert set(UsageEvent.objects.values_list("request_id", flat=True)) == {"old-b", "new"}
    assert sorted(v[0] for v in consistent().values()) == [1, 1]


@pytest.mark.django_db
def test_rebuild_restores_the_rollup_for_a_tenant_and_a_range_only() -> None:
    acme = Tenant.objects.create(name="acme")
    other = Tenant.objects.create(name="other")
    for rid, tenant, days in (("a", acme, 0), ("b", acme, 3), ("c", other, 0)):
        final(tenant, rid, completion_tokens=2)
        when = datetime.now(UTC) - timedelta(days=days)
        UsageEvent.objects.filter(request_id=rid).update(created_at=when)
    UsageDaily.objects.all().delete()
    UsageDaily.objects.create(tenant=acme, day=date(2020, 1, 1), model="ghost", requests=5)
    today = datetime.now(UTC).date()
    assert usage_rollup_rebuild(tenant_ids=[acme.pk], start=today, end=today) == 1
    # Only acme's today was rebuilt: its stray row of another day stays, "other" stays out.
    assert rolled() == {
        (acme.pk, date(2020, 1, 1), "ghost", 0, ""): (5, 0, 0, 0, 0, 0, 0),
        (acme.pk, today, "m1", 0, "chat"): (1, 0, 2.0, 0, 0, 0, 0),
    }
    # The CLI rebuilds everything: the stray row goes, every group is back.
    from rbee.cli import main

    result = CliRunner().invoke(main, ["billing", "rollup", "--rebuild"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "rebuilt the daily usage roll-up: 3 rows"
    assert len(consistent()) == 3
    result = CliRunner().invoke(
        main, ["billing", "rollup", "--rebuild", "--start", "2026-02-01", "--end", "2026-01-01"]
    )
    assert result.exit_code == 1 and "ends (2026-01-01) before it starts" in result.output


def _writer(tenant_id: int, key_id: int, first: int, n: int, errors: list[BaseException]) -> None:
    try:
        for i in range(first, first + n):
            rid = f"w-{i}"
            if i % 3 == 0:  # admitted, then finalised
                usage_begin(
                    request_id=rid,
                    tenant_id=tenant_id,
                    api_key_id=key_id,
                    model="m1",
                    modality="chat",
                    queen=instance_id(),
                )
            usage_record(
                request_id=rid,
                tenant_id=tenant_id,
                api_key_id=key_id if i % 2 else None,
                model="m1",
                modality="chat",
                usage=Usage(prompt_tokens=i % 7 + 1, completion_tokens=i % 5 + 1),
            )
    except BaseException as exc:  # reported by the test
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_lose_an_increment() -> None:
    """Real concurrency on PostgreSQL; SQLite's test database (shared in-memory cache)
    refuses concurrent writers outright, so there the same work runs one thread after
    another."""
    acme = Tenant.objects.create(name="acme")
    key = ApiKey.objects.create(tenant=acme, prefix="kc", key_hash="z" * 64)
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_writer, args=(acme.pk, key.pk, t * 1000, 60, errors))
        for t in range(6)
    ]
    # Settlers and a rebuild race the writers too.
    dead = dead_queen()
    for i in range(20):
        begin(acme, f"s-{i}", dead, key)
        usage_progress(request_id=f"s-{i}", usage=Usage(prompt_tokens=3, completion_tokens=4))
    settlers = [threading.Thread(target=_settle, args=(errors,)) for _ in range(2)]
    rebuild = threading.Thread(target=_rebuild, args=(errors,))
    everyone = [*threads, *settlers, rebuild]
    if connection.vendor == "postgresql":
        for t in everyone:
            t.start()
        for t in everyone:
            t.join(120)
    else:
        for t in everyone:
            t.start()
            t.join(120)
    assert errors == []
    expected = consistent()
    assert sum(v[0] for v in expected.values()) == 6 * 60 + 20
    assert UsageEvent.objects.filter(outcome=UsageEvent.Outcome.INTERRUPTED).count() == 20


def _settle(errors: list[BaseException]) -> None:
    try:
        usage_settle_stale(lease_s=600, limit=10)
        usage_settle_stale(lease_s=600)
    except BaseException as exc:
        errors.append(exc)
    finally:
        connections.close_all()


def _rebuild(errors: list[BaseException]) -> None:
    try:
        usage_rollup_rebuild()
    except BaseException as exc:
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_the_migration_rolls_up_the_usage_recorded_before_it() -> None:
    """A database with usage from before the roll-up existed gets its roll-up when it
    migrates (0007_usagedaily), provisional rows left out."""
    from django.db.migrations.executor import MigrationExecutor

    def migrate(target: list[tuple[str, str]]) -> None:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(target)

    before = [("billing", "0006_invoice_customer")]
    migrate(before)  # no roll-up table (tenants unchanged)
    acme = Tenant.objects.create(name="acme")
    rows = (
        ("r1", "ok", 10, datetime(2026, 3, 1, 23, 59, tzinfo=UTC)),
        ("r2", "interrupted", 5, datetime(2026, 3, 1, 0, 0, tzinfo=UTC)),
        ("r3", "ok", 1, datetime(2026, 3, 2, 0, 0, tzinfo=UTC)),
        ("r4", "provisional", 100, datetime(2026, 3, 2, 1, 0, tzinfo=UTC)),
    )
    # The usage table as it was then (later migrations add columns the model has now).
    state = MigrationExecutor(connection).loader.project_state(("billing", "0006_invoice_customer"))
    then = state.apps.get_model("billing", "UsageEvent")
    for rid, outcome, tokens, when in rows:
        then.objects.create(
            request_id=rid,
            tenant_id=acme.pk,
            model="m1",
            modality="chat",
            prompt_tokens=tokens,
            outcome=outcome,
        )
        then.objects.filter(request_id=rid).update(created_at=when)
    latest = [n for n in MigrationExecutor(connection).loader.graph.leaf_nodes()]
    migrate(latest)
    assert consistent() == {
        (acme.pk, date(2026, 3, 1), "m1", 0, "chat"): (2, 15.0, 0, 0, 0, 0, 0),
        (acme.pk, date(2026, 3, 2), "m1", 0, "chat"): (1, 1.0, 0, 0, 0, 0, 0),
    }
