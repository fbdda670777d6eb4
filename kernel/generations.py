"""Generation counters: how every queen process learns that data it keeps in memory changed.

A process that caches rows read on the request path (the callers of API keys: tenants/
selectors.py) tags each entry with the generation it read *before* reading the rows, and
uses the entry only while the generation is still the same. Whoever changes those rows
calls `bump(name)` (at once, and again once the transaction commits), from any process:
the queen, the CLI, a Celery worker, the admin.

Where the counter lives follows the deployment:

* embedded default: a file under RBEE_HOME, whose modification time (ns) is the
  generation; reading it is one `stat` (a few microseconds, no thread hop), and every
  process on the machine sees a bump at once;
* PostgreSQL + Redis (RBEE_REDIS_URL): a Redis key that `bump` INCRs; reading it is one
  GET per request on the event loop, so a key revoked on any replica stops on every
  replica with the next request (no broadcast to miss, no time window). A counter Redis
  lost (a restart, an eviction) starts again from the time, never from 0 (_seed).

When the counter cannot be read (Redis down), `current` answers None and callers go to
the database as if nothing were cached: never a stale answer because the signal was lost.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from django.conf import settings

from kernel import redis_state

logger = logging.getLogger("kernel.generations")


def _key(name: str) -> str:
    return str(getattr(settings, "RBEE_GENERATIONS_PREFIX", "rbee:gen:")) + name


def _redis_url() -> str:
    return str(getattr(settings, "REDIS_URL", "") or "")


def _path(name: str) -> Path:
    folder = Path(settings.RBEE_HOME) / "generations"
    return folder / _key(name).replace(":", "_").replace("/", "_")


# --- embedded: a file's modification time --------------------------------------------------


def _file_generation(name: str) -> int:
    try:
        return os.stat(_path(name)).st_mtime_ns
    except FileNotFoundError:
        return 0


# Steps forward when a filesystem keeps coarser times than nanoseconds: what it stored
# of `before + 1` is `before` again (whole microseconds, milliseconds, seconds; FAT: 2 s).
_COARSE_STEPS_NS = (1_000, 1_000_000, 1_000_000_000, 2_000_000_000)


def _file_bump(name: str) -> None:
    path = _path(name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        # One bump at a time across processes: two that read the same `before` would
        # write the same time, and the second change would not be seen.
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = os.fstat(fd).st_mtime_ns
        # Always forward, even when two bumps fall on one clock tick or the clock went
        # back, and by as much as the filesystem's resolution needs to show it.
        stamp = max(time.time_ns(), before + 1)
        os.utime(path, ns=(stamp, stamp))
        for step in _COARSE_STEPS_NS:
            if os.fstat(fd).st_mtime_ns > before:
                break
            stamp = max(stamp, before + step)
            os.utime(path, ns=(stamp, stamp))
        else:
            if os.fstat(fd).st_mtime_ns <= before:
                raise OSError(f"the time of {path} does not move forward")
    finally:
        os.close(fd)  # and the lock with it


# --- PostgreSQL + Redis: a Redis counter ---------------------------------------------------

_sync_clients: dict[str, Any] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _sync_client(url: str) -> Any:
    with _lock:
        client = _sync_clients.get(url)
        if client is None:
            import redis

            timeout = float(getattr(settings, "RBEE_REDIS_TIMEOUT", 3.0))
            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            _sync_clients[url] = client
        return client


def _async_client(url: str) -> Any:
    loop = asyncio.get_running_loop()
    with _lock:
        client = _async_clients.get(loop)
        if client is None:
            import redis.asyncio as aioredis

            timeout = float(getattr(settings, "RBEE_REDIS_TIMEOUT", 3.0))
            client = aioredis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            _async_clients[loop] = client
        return client


# After a Redis call failed, the next ones within a moment fail at once, as the limiter's
# and the channel layer's do (kernel/redis_state.py): a Redis that is down or blackholed
# costs one timeout, not one per request or per write.


def _redis_down() -> bool:
    return redis_state.down(_redis_url()) is not None


def _failed(exc: BaseException) -> None:
    if redis_state.is_outage(exc):
        redis_state.failed(_redis_url(), type(exc).__name__)


# --- the interface --------------------------------------------------------------------------


def _seed() -> int:
    """Where a Redis counter starts when it is missing (Redis restarted without keeping
    it, or evicted it): the time in microseconds, past every value an earlier counter
    reached. Counting again from 0 would walk back through old values, and an entry kept
    under one of them would be used again (a key revoked meanwhile served again)."""
    return time.time_ns() // 1000


def _redis_bump(url: str, name: str) -> None:
    pipe = _sync_client(url).pipeline(transaction=True)
    pipe.set(_key(name), _seed(), nx=True)
    pipe.incr(_key(name))
    pipe.execute()


async def _seeded(client: Any, name: str) -> Any:
    """The value of a counter that was missing, once seeded (by this read or a racing
    one): rare, the first read after Redis lost it."""
    await client.set(_key(name), _seed(), nx=True)
    return await client.get(_key(name))


def bump(name: str, *, fail_fast: bool = True) -> None:
    """Mark the rows behind generation `name` as changed, for every process. Never raises:
    a failure is logged (the caches' own age limit still bounds how long they are kept).
    `fail_fast=False`: ask Redis even in the moment after a failure, when other
    processes may well still read it (who may call: see tenants.services)."""
    url = _redis_url()
    try:
        if not url:
            _file_bump(name)
        elif not fail_fast or not _redis_down():
            _redis_bump(url, name)
        else:
            logger.warning("could not bump generation %s: Redis is not answering", name)
    except Exception as exc:
        if url:
            _failed(exc)
        logger.exception("could not bump generation %s", name)
    _local[name] = _local.get(name, 0) + 1


# Bumps made by this process: part of the generation, so a bump whose shared write
# failed still invalidates this process's own entries.
_local: dict[str, int] = {}


async def current(name: str) -> tuple[int, int] | None:
    """The generation of `name` now (compare for equality only), or None when it cannot
    be read (then nothing cached may be used)."""
    local = _local.get(name, 0)
    url = _redis_url()
    if not url:
        return (_file_generation(name), local)
    if _redis_down():
        return None
    try:
        client = _async_client(url)
        raw = await client.get(_key(name))
        if raw is None:
            raw = await _seeded(client, name)
    except Exception as exc:
        _failed(exc)
        logger.warning("could not read generation %s: %s", name, exc)
        return None
    return None if raw is None else (int(raw), local)


async def current_all(*names: str) -> list[tuple[int, int] | None]:
    """`current` of several names in one read (one MGET on Redis)."""
    locals_ = [_local.get(n, 0) for n in names]
    url = _redis_url()
    if not url:
        return [(_file_generation(n), loc) for n, loc in zip(names, locals_, strict=True)]
    if _redis_down():
        return [None for _ in names]
    try:
        client = _async_client(url)
        raws = list(await client.mget([_key(n) for n in names]))
        for i, raw in enumerate(raws):
            if raw is None:
                raws[i] = await _seeded(client, names[i])
    except Exception as exc:
        _failed(exc)
        logger.warning("could not read generations %s: %s", ", ".join(names), exc)
        return [None for _ in names]
    return [
        None if raw is None else (int(raw), loc) for raw, loc in zip(raws, locals_, strict=True)
    ]


def current_sync(name: str) -> tuple[int, int] | None:
    """`current` for sync code (a thread, the CLI)."""
    local = _local.get(name, 0)
    url = _redis_url()
    if not url:
        return (_file_generation(name), local)
    if _redis_down():
        return None
    try:
        client = _sync_client(url)
        raw = client.get(_key(name))
        if raw is None:  # missing: seeded as in _seeded
            client.set(_key(name), _seed(), nx=True)
            raw = client.get(_key(name))
    except Exception as exc:
        _failed(exc)
        logger.warning("could not read generation %s: %s", name, exc)
        return None
    return None if raw is None else (int(raw), local)
