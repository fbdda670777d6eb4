"""kernel.aio.db_grouped: the usage writes of many requests at once share one transaction
and one thread hop; each caller still gets its own write's result or error, and one
write that fails takes nothing else with it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError, OperationalError, connections

from kernel import aio
from kernel.aio import db_grouped
from kernel.errors import Unavailable
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


def _create(name: str) -> int:
    return Tenant.objects.create(name=name).pk


def _names() -> set[str]:
    return set(Tenant.objects.values_list("name", flat=True))


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each group that reached the database."""
    sizes: list[int] = []
    real = aio._run_group

    def counted(fns: list[Any]) -> list[tuple[bool, Any]]:
        sizes.append(len(fns))
        return real(fns)

    monkeypatch.setattr(aio, "_run_group", counted)
    return sizes


async def _close() -> None:
    await sync_to_async(connections.close_all)()


async def test_writes_made_at_once_share_transactions(groups: list[int]) -> None:
    names = [f"t{i}" for i in range(20)]
    pks = await asyncio.gather(*(db_grouped(_create, n) for n in names))
    assert len(set(pks)) == 20
    assert await sync_to_async(_names)() >= set(names)
    # Made in one loop tick: all of them wait for the first group, and go in it.
    assert groups == [20]
    await _close()


async def test_one_failing_write_fails_alone(groups: list[int]) -> None:
    await db_grouped(_create, "taken")

    def boom() -> None:
        raise ValueError("not a database error")

    results = await asyncio.gather(
        db_grouped(_create, "a1"),
        db_grouped(_create, "taken"),  # the unique name: IntegrityError, its own
        db_grouped(boom),
        db_grouped(_create, "a2"),
        return_exceptions=True,
    )
    assert isinstance(results[0], int) and isinstance(results[3], int)
    assert isinstance(results[1], IntegrityError)
    assert isinstance(results[2], ValueError)
    assert {"a1", "a2", "taken"} <= await sync_to_async(_names)()
    assert groups == [1, 4]
    await _close()


async def test_a_write_the_database_refused_in_the_group_is_tried_again_alone(
    groups: list[int],
) -> None:
    tries: list[int] = []

    def deadlocked_once() -> int:
        tries.append(1)
        if len(tries) == 1:
            raise OperationalError("deadlock detected")
        return _create("retried")

    results = await asyncio.gather(
        db_grouped(_create, "b0"),
        db_grouped(_create, "b1"),
        db_grouped(deadlocked_once),
        db_grouped(_create, "b2"),
    )
    assert isinstance(results[2], int) and len(tries) == 2
    assert groups == [4]  # the retry went alone, not as a group
    assert {"b0", "b1", "b2", "retried"} <= await sync_to_async(_names)()
    await _close()


async def test_a_database_error_alone_is_unavailable() -> None:
    def down() -> None:
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(Unavailable):
        await db_grouped(down)
    await _close()


async def test_a_connection_lost_in_the_group_loses_no_write_it_reported_written() -> None:
    """A write whose connection dies in the group (the server ended the session) leaves
    a transaction that can only roll back: the writes before it were not committed, so
    none of them may be reported written; each is made again on its own."""
    from django.db import connection

    assert connection.vendor == "postgresql", "this test ends its own PostgreSQL session"

    def connection_lost() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    results = await asyncio.gather(
        db_grouped(_create, "c0"),
        db_grouped(connection_lost),
        db_grouped(_create, "c2"),
        return_exceptions=True,
    )
    assert isinstance(results[1], Unavailable)
    names = await sync_to_async(_names)()
    for name, result in zip(["c0", "c2"], [results[0], results[2]], strict=True):
        if isinstance(result, int):  # reported written: it is
            assert name in names
    assert isinstance(results[0], int) and isinstance(results[2], int)
    await _close()


async def test_a_write_whose_caller_gave_up_before_its_group_began_is_not_made(
    settings: Any,
) -> None:
    """A caller that stopped waiting (RBEE_DB_TIMEOUT: its request was refused with a
    503) before its write went to the database: the write is left out, as a db() call
    still queued for a thread is, rather than made later for a request that never ran
    (a provisional usage row for it would be settled as interrupted and counted)."""
    import threading

    settings.RBEE_DB_TIMEOUT = 0.3
    release = threading.Event()

    def slow() -> int:
        release.wait(5)
        return _create("slow")

    first = asyncio.ensure_future(db_grouped(slow))  # holds the group in the database
    await asyncio.sleep(0.05)
    with pytest.raises(Unavailable):
        await db_grouped(_create, "gave-up")  # waits behind it, and gives up
    release.set()
    with pytest.raises(Unavailable):
        await first  # it gave up too, but its write had begun: that one lands
    await db_grouped(_create, "after")  # the next group runs once the first is done
    names = await sync_to_async(_names)()
    assert {"slow", "after"} <= names
    assert "gave-up" not in names
    await _close()
