"""Database access from async code on the request path.

Django runs sync code of an async request in a thread made for that request, so
each request opened (and closed) its own database connection: ~1 ms on SQLite
and several on PostgreSQL. The hot path instead runs its queries on the event
loop's shared executor, whose threads keep their connections (CONN_MAX_AGE) and
check them before use the way Django does at the start of a request.

A database that is down, refuses connections or stops answering (a network that drops
packets, a server that hangs) is `kernel.errors.Unavailable` (503 + Retry-After) within
RBEE_DB_TIMEOUT seconds, never a hang or a 500: libpq's own timeouts (settings: connect
timeout, TCP keepalives and user timeout) end most such calls, and a call still waiting
past RBEE_DB_TIMEOUT is abandoned here (its thread finishes or fails on its own later).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from kernel.errors import Unavailable

P = ParamSpec("P")
R = TypeVar("R")


CHECK_IDLE_S = 1.0
"""A thread's connection idle longer than this is checked before its next use."""
CHECK_EVERY_S = 10.0
"""A connection in constant use is still checked (and kept to CONN_MAX_AGE) this often."""

_thread = threading.local()


def _check_connections() -> None:
    """Django's check at the start of a request (close_old_connections: drop a connection
    past CONN_MAX_AGE, or one that fails the health check, a `SELECT 1` on PostgreSQL),
    when this thread's connection was idle for a moment or last checked a while ago. Run
    before every call, the check was one more round trip to the database for each of a
    request's calls; a connection that broke within the moment fails its query, is
    closed (below), and the next call opens a new one."""
    now = time.monotonic()
    if (
        now - getattr(_thread, "used", -math.inf) > CHECK_IDLE_S
        or now - getattr(_thread, "checked", -math.inf) > CHECK_EVERY_S
    ):
        close_old_connections()
        _thread.checked = now


def _fresh(fn: Callable[P, R]) -> Callable[P, R]:
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        _check_connections()  # drop connections that are too old or broken
        try:
            return fn(*args, **kwargs)
        except (OperationalError, InterfaceError):
            # A connection that failed is unusable: let the next call open a new one,
            # checked first.
            close_old_connections()
            _thread.checked = -math.inf
            raise
        finally:
            _thread.used = time.monotonic()

    return run


def db_timeout() -> float:
    return float(getattr(settings, "RBEE_DB_TIMEOUT", 5.0))


async def db(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn` (ORM code, no transaction spanning calls) off the event loop; Unavailable
    when the database cannot be reached or does not answer within RBEE_DB_TIMEOUT."""
    timeout = db_timeout()
    call = sync_to_async(_fresh(fn), thread_sensitive=False)(*args, **kwargs)
    try:
        return await asyncio.wait_for(call, timeout=timeout if timeout > 0 else None)
    except TimeoutError as exc:
        raise Unavailable("database", f"no answer in {timeout:g} s") from exc
    except (OperationalError, InterfaceError) as exc:
        raise Unavailable("database", type(exc).__name__) from exc


_shared: dict[str, asyncio.Task[Any]] = {}


async def db_shared(key: str, fn: Callable[[], R]) -> R:
    """db(fn) for a read that many callers may ask for at once (a scrape): while a call
    for `key` runs, later callers wait for its answer instead of starting their own. A
    database that does not answer then holds one executor thread for it (threads the
    request path shares), not one more per caller. Each caller still gets Unavailable
    after RBEE_DB_TIMEOUT; the call runs on until the database answers, and callers
    meanwhile wait for it. Nothing is cached: a caller after it ends starts a fresh call."""
    loop = asyncio.get_running_loop()
    task = _shared.get(key)
    if task is None or task.done() or task.get_loop() is not loop:
        task = _shared[key] = loop.create_task(sync_to_async(_fresh(fn), thread_sensitive=False)())
        # Its error is each waiter's; one that nobody awaits any more is not "unretrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    timeout = db_timeout()
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout if timeout > 0 else None)
    except TimeoutError as exc:
        raise Unavailable("database", f"no answer in {timeout:g} s") from exc
    except (OperationalError, InterfaceError) as exc:
        raise Unavailable("database", type(exc).__name__) from exc
