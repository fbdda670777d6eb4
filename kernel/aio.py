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
import functools
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction

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


# --- group commit -----------------------------------------------------------------------

GROUP_MOST = 64
"""The most writes one grouped transaction holds."""


class _Group:
    """The writes of one event loop waiting for their transaction (db_grouped)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self.task: asyncio.Task[None] | None = None

    async def drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:GROUP_MOST], self.pending[GROUP_MOST:]
            # A caller that stopped waiting before its write began (RBEE_DB_TIMEOUT, its
            # request refused) is left out, as a db() call still queued for a thread is:
            # its write must not land later for a request that never ran.
            batch = [(fn, future) for fn, future in batch if not future.done()]
            if not batch:
                continue
            fns = [fn for fn, _ in batch]
            try:
                outcomes = await sync_to_async(_fresh(_run_group), thread_sensitive=False)(fns)
            except BaseException as exc:  # each waiter gets it
                outcomes = [(False, exc)] * len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # its caller stopped waiting (timeout, cancelled)
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)


_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Group] = weakref.WeakKeyDictionary()


def _alone(fn: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return (True, fn())
    except Exception as exc:  # its caller's to raise
        if isinstance(exc, OperationalError | InterfaceError):
            close_old_connections()  # as _fresh: the next write gets a working connection
        return (False, exc)


class _GroupLost(Exception):
    """The group's transaction can only roll back (its connection failed in a write)."""


def _run_group(fns: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    """The writes in one transaction, each in a savepoint of its own (one that fails is
    undone alone and the rest commit). A write that failed on the database's side (a
    deadlock with another queen's group, a lock timeout) is run once more alone; if the
    commit itself fails, each write runs alone in its own transaction."""
    if len(fns) == 1:
        return [_alone(fns[0])]
    outcomes: list[tuple[bool, Any]] = []
    try:
        with transaction.atomic():
            for fn in fns:
                try:
                    with transaction.atomic():
                        outcomes.append((True, fn()))
                except Exception as exc:
                    outcomes.append((False, exc))
            # A savepoint that could not be rolled back (the connection failed in that
            # write) leaves a transaction Django only rolls back on leaving the block, and
            # silently: the writes before it were not made, whatever they returned.
            connection = transaction.get_connection()
            if connection.needs_rollback or connection.closed_in_transaction:
                raise _GroupLost
    except Exception:  # the commit, or a lost group: nothing of the group was written
        close_old_connections()
        return [_alone(fn) for fn in fns]
    return [
        _alone(fn) if not ok and isinstance(value, OperationalError) else (ok, value)
        for fn, (ok, value) in zip(fns, outcomes, strict=True)
    ]


async def db_grouped(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """db(fn), for small idempotent writes made by many requests at once (the usage rows):
    writes submitted while a group is in the database go together in the next one, one
    thread hop and one transaction (one commit, one fsync) for all of them. With one
    request at a time it is db(fn) in a transaction. `fn` runs in a savepoint of the
    group's transaction, so it must not depend on committing on its own (no
    `transaction.on_commit` that expects to run before the call returns), and may run
    twice when the group is retried (it must be idempotent). Errors as db's."""
    loop = asyncio.get_running_loop()
    group = _groups.get(loop)
    if group is None:
        group = _groups[loop] = _Group()
    future: asyncio.Future[R] = loop.create_future()
    group.pending.append((functools.partial(fn, *args, **kwargs), future))
    if group.task is None or group.task.done():
        group.task = loop.create_task(group.drain(), name="db-group-commit")
    timeout = db_timeout()
    try:
        # On a timeout the future is cancelled: the group leaves it (its write may still
        # land, as an abandoned db() call's may).
        return await asyncio.wait_for(future, timeout if timeout > 0 else None)
    except TimeoutError as exc:
        raise Unavailable("database", f"no answer in {timeout:g} s") from exc
    except (OperationalError, InterfaceError) as exc:
        raise Unavailable("database", type(exc).__name__) from exc
