"""The callers a queen process keeps (tenants.selectors.caller_cached): used only while
nothing about keys, tenants or plans changed (kernel.generations), the key checked
against its stored hash every time, and never past the key's expiry. Runs on both
backends: the generation is a file's time on the embedded default and a Redis counter
on PostgreSQL + Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from kernel import generations, redis_state
from tenants import selectors
from tenants.models import ApiKey, Plan, Tenant
from tenants.selectors import CALLERS, KeyRejected, caller_cached, caller_from_key
from tenants.services import (
    api_key_create,
    api_key_revoke,
    plan_set,
    tenant_create,
    tenant_set_overrides,
    tenant_set_plan,
    tenant_set_status,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_generations(settings: Any) -> None:
    """Counters of this test's own: other test processes on the same Redis (or RBEE_HOME)
    bump the shared ones whenever they create a tenant."""
    settings.RBEE_GENERATIONS_PREFIX = f"test-{uuid.uuid4().hex[:12]}:gen:"


def gen() -> object:
    g = generations.current_sync(CALLERS)
    assert g is not None
    return g


def test_a_resolved_key_is_kept_and_checked_against_its_hash() -> None:
    t = tenant_create(name="acme", tier="pro")
    key, plain = api_key_create(tenant=t)
    g = gen()
    caller = caller_from_key(plain, g)
    assert caller_cached(plain, g) == caller
    assert caller.api_key_id == key.pk
    forged = plain[:-1] + ("A" if plain[-1] != "A" else "B")  # same prefix, wrong secret
    assert caller_cached(forged, g) is None
    with pytest.raises(KeyRejected):
        caller_from_key(forged, g)
    assert caller_cached(plain, None) is None  # the generation could not be read
    assert caller_cached("not-a-key", g) is None


def test_a_key_resolved_without_a_generation_is_not_kept() -> None:
    t = tenant_create(name="acme")
    _, plain = api_key_create(tenant=t)
    selectors.callers_forget()
    caller_from_key(plain)
    assert caller_cached(plain, gen()) is None


def _revoke(t: Tenant, key: ApiKey) -> None:
    api_key_revoke(api_key=key)


def _suspend(t: Tenant, key: ApiKey) -> None:
    tenant_set_status(tenant=t, status=Tenant.Status.SUSPENDED)


def _plan(t: Tenant, key: ApiKey) -> None:
    plan_set(name="tiny", limits={"requests_per_day": 1})
    tenant_set_plan(tenant=t, plan_name="tiny")


def _plan_edited(t: Tenant, key: ApiKey) -> None:
    plan = Plan.objects.get(name="base")
    plan.requests_per_day = 3
    plan.save()  # as the admin does


def _overrides(t: Tenant, key: ApiKey) -> None:
    tenant_set_overrides(tenant=t, overrides={"requests_per_day": 2})


def _deleted(t: Tenant, key: ApiKey) -> None:
    key.delete()


@pytest.mark.parametrize(
    ("change", "after"),
    [
        (_revoke, "revoked"),
        (_suspend, "suspended"),
        (_plan, {"requests_per_day": 1}),
        (_plan_edited, {"requests_per_day": 3}),
        (_overrides, {"requests_per_day": 2}),
        (_deleted, "unknown"),
    ],
)
def test_every_change_to_keys_tenants_and_plans_drops_kept_callers(
    change: Callable[[Tenant, ApiKey], None], after: Any
) -> None:
    plan_set(name="base", limits={"requests_per_day": 100})
    t = tenant_create(name="acme", plan="base")
    key, plain = api_key_create(tenant=t)
    g = gen()
    before = caller_from_key(plain, g)
    assert caller_cached(plain, g) == before
    assert before.limits["requests_per_day"] == 100

    change(t, key)

    g2 = gen()
    assert g2 != g
    assert caller_cached(plain, g2) is None
    if isinstance(after, str):
        with pytest.raises(KeyRejected) as exc:
            caller_from_key(plain, g2)
        assert exc.value.reason == after
        assert caller_cached(plain, g2) is None
    else:
        fresh = caller_from_key(plain, g2)
        for name, value in after.items():
            assert fresh.limits[name] == value
        assert caller_cached(plain, g2) == fresh


def test_touching_a_key_keeps_the_callers() -> None:
    """The last-used write (once a minute per key) is not a change that drops them."""
    from tenants.services import api_key_touch

    t = tenant_create(name="acme")
    key, plain = api_key_create(tenant=t)
    g = gen()
    caller_from_key(plain, g)
    api_key_touch(api_key_id=key.pk)
    assert gen() == g
    assert caller_cached(plain, g) is not None


def test_a_kept_key_is_not_used_past_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    t = tenant_create(name="acme")
    ends = timezone.now() + timedelta(hours=1)
    _, plain = api_key_create(tenant=t, expires_at=ends)
    g = gen()
    caller_from_key(plain, g)
    assert caller_cached(plain, g) is not None
    later = ends + timedelta(seconds=1)

    def now() -> datetime:
        return later

    monkeypatch.setattr(selectors.timezone, "now", now)
    assert caller_cached(plain, g) is None
    with pytest.raises(KeyRejected) as exc:
        caller_from_key(plain, g)
    assert exc.value.reason == "expired"


async def test_an_unreadable_generation_means_nothing_is_used(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis down: the generation cannot be read, and nothing kept may be used; for a
    moment after a failure Redis is not even asked (one timeout, not one per request)."""
    monkeypatch.setattr(redis_state, "_down", {})  # restored: later tests ask Redis
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert await generations.current(CALLERS) is None
    assert generations._redis_down()
    assert await generations.current_all(CALLERS, "fleet") == [None, None]
    assert generations.current_sync(CALLERS) is None
    generations.bump(CALLERS)  # logged, never raised
    monkeypatch.setattr(redis_state, "_down", {})
    generations.bump(CALLERS)  # a failed write, logged, never raised
    assert generations._redis_down()


# --- the counter itself: what another process's bumps look like here ---------------------


def _redis_url() -> str:
    """The suite's Redis (the embedded runs have one on the machine too): these tests
    are about the Redis counter, so its absence is a failure, not a skip."""
    import os

    return os.environ.get("RBEE_REDIS_URL") or "redis://127.0.0.1:6379/0"


def _elsewhere(monkeypatch: pytest.MonkeyPatch, change: Callable[[], object]) -> None:
    """Run `change` as another process would: its bumps do not count in this process's
    own part of the generation (generations._local), only in the shared counter."""
    with monkeypatch.context() as m:
        m.setattr(generations, "_local", {})
        change()


def test_a_lost_redis_counter_never_brings_back_an_old_generation(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarted without persistence, or evicted the counter: it starts again. A
    caller kept under the old value must not turn valid again when other replicas' later
    changes count back up to that value (a revoked key would be served again)."""
    import redis

    settings.REDIS_URL = _redis_url()
    monkeypatch.setattr(redis_state, "_down", {})
    t = tenant_create(name="acme")
    key, plain = api_key_create(tenant=t)
    for _ in range(3):  # some history: the counter is past its first values
        _elsewhere(monkeypatch, lambda: generations.bump(CALLERS))
    g = gen()
    assert caller_from_key(plain, g) == caller_cached(plain, g)

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(generations._key(CALLERS))  # the restart, or an eviction
    _elsewhere(monkeypatch, lambda: api_key_revoke(api_key=key))
    for _ in range(20):  # more changes made elsewhere afterwards
        now = gen()
        assert now != g
        assert caller_cached(plain, now) is None
        _elsewhere(monkeypatch, lambda: generations.bump(CALLERS))
    client.delete(generations._key(CALLERS))
    client.close()


def test_a_key_change_reaches_redis_even_just_after_a_failed_read(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After one failed Redis call a process skips Redis for a moment (reads: nothing
    kept is used). A revocation made then must still reach Redis: the other replicas,
    whose reads work, would otherwise keep serving the revoked key."""
    import redis

    settings.REDIS_URL = _redis_url()
    monkeypatch.setattr(redis_state, "_down", {})
    t = tenant_create(name="acme")
    key, _ = api_key_create(tenant=t)
    client = redis.Redis.from_url(settings.REDIS_URL)
    before = int(client.get(generations._key(CALLERS)) or 0)
    redis_state.failed(settings.REDIS_URL, "TimeoutError")  # a read failed
    api_key_revoke(api_key=key)
    assert int(client.get(generations._key(CALLERS)) or 0) != before
    client.delete(generations._key(CALLERS))
    client.close()


def test_the_file_counter_moves_on_a_filesystem_with_coarse_times(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedded: the generation is a file's modification time. Where the filesystem keeps
    whole seconds (ext4 with small inodes, HFS+, some network and shared folders), two
    bumps within one second must still give two generations: the second may be the
    commit of a change whose rows a reader kept between the two."""
    import os

    settings.REDIS_URL = ""
    real = os.utime

    def whole_seconds(path: Any, *args: Any, ns: tuple[int, int] | None = None) -> None:
        if ns is not None:
            ns = tuple(n - n % 1_000_000_000 for n in ns)  # type: ignore[assignment]
        real(path, *args, ns=ns) if ns is not None else real(path, *args)

    monkeypatch.setattr(os, "utime", whole_seconds)
    seen = []
    for _ in range(4):
        _elsewhere(monkeypatch, lambda: generations.bump(CALLERS))
        seen.append(gen())
    assert len(set(seen)) == len(seen), seen
