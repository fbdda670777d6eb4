"""kernel.aio checks a thread's database connection (Django's close_old_connections: age,
and on PostgreSQL a `SELECT 1` health check) when it was idle for a moment or last checked
a while ago, not before every call of the request path; a connection that broke meanwhile
fails one call, and the next opens a new one."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import OperationalError, connection

from kernel import aio


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    done: list[float] = []
    monkeypatch.setattr(aio, "close_old_connections", lambda: done.append(time.monotonic()))
    monkeypatch.setattr(aio._thread, "used", -1e9, raising=False)
    monkeypatch.setattr(aio._thread, "checked", -1e9, raising=False)
    return done


def test_calls_back_to_back_are_checked_once(checks: list[float]) -> None:
    run = aio._fresh(lambda: 1)
    assert [run() for _ in range(5)] == [1] * 5
    assert len(checks) == 1


def test_a_connection_idle_for_a_moment_is_checked_again(checks: list[float]) -> None:
    run = aio._fresh(lambda: 1)
    run()
    aio._thread.used = time.monotonic() - aio.CHECK_IDLE_S - 0.1
    run()
    assert len(checks) == 2


def test_a_connection_in_constant_use_is_still_checked_now_and_then(
    checks: list[float],
) -> None:
    run = aio._fresh(lambda: 1)
    run()
    aio._thread.checked = time.monotonic() - aio.CHECK_EVERY_S - 0.1
    run()
    run()
    assert len(checks) == 2


def test_after_a_failed_call_the_next_is_checked(checks: list[float]) -> None:
    def broken() -> None:
        raise OperationalError("server closed the connection unexpectedly")

    aio._fresh(lambda: 1)()
    with pytest.raises(OperationalError):
        aio._fresh(broken)()
    assert len(checks) == 2  # closed after the failure
    aio._fresh(lambda: 1)()
    assert len(checks) == 3  # and checked before the next call


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_fails_one_call_and_the_next_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL ended the backend (a restart, a failover, an idle timeout) while the
    connection was in use moments ago: one call fails, the next reconnects."""
    if connection.vendor != "postgresql":
        pytest.skip("a SQLite connection is never dropped by a server")
    import psycopg

    monkeypatch.setattr(aio._thread, "used", -1e9, raising=False)

    def pid() -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    run = aio._fresh(pid)
    first = run()
    dsn = connection.get_connection_params()
    admin = psycopg.connect(
        host=dsn.get("host"),
        port=dsn.get("port"),
        user=dsn.get("user"),
        dbname="postgres",
        autocommit=True,
    )
    admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    admin.close()
    with pytest.raises(OperationalError):
        run()  # within the moment: not checked, and the server is gone
    assert run() != first  # a new connection
