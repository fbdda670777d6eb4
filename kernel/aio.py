"""Database access from async code on the request path.

Django runs sync code of an async request in a thread made for that request, so
each request opened (and closed) its own database connection: ~1 ms on SQLite
and several on PostgreSQL. The hot path instead runs its queries on the event
loop's shared executor, whose threads keep their connections (CONN_MAX_AGE) and
check them before use the way Django does at the start of a request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def _fresh(fn: Callable[P, R]) -> Callable[P, R]:
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()  # drop connections that are too old or broken
        return fn(*args, **kwargs)

    return run


async def db(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `fn` (ORM code, no transaction spanning calls) off the event loop."""
    return await sync_to_async(_fresh(fn), thread_sensitive=False)(*args, **kwargs)
