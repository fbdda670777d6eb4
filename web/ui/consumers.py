"""/ui/ws/fleet: the fleet page's live feed.

A signed-in operator with the fleet permission gets the whole fleet fragment at once
(on every connect and reconnect: nothing is assumed about what the page still shows),
then only the pieces that changed (a hive's card, the figures, the downloads; htmx's ws
extension swaps each by its id) whenever the hives app announces a change
(hives.events), and on a periodic tick, so that a hive whose heartbeat gets old turns
stale without any event.

Rendering is shared: one FleetFeed per queen process renders the fleet at most once per
change generation, however many sockets are open, and hands every socket the same
pieces; each socket sends what differs from what it sent last. A render waits at least
MIN_INTERVAL after the last one (and longer when renders are slow, so that the feed
takes a bounded share of the process). Nothing is sent when nothing shown changed (the
"Updated" time alone is no change). Sockets are capped per operator and per process.

The feed stops with the session that opened it: the tick re-reads the session (signed
out elsewhere, expired) and the permission, and signing out closes that session's
sockets at once (web.signals, through the operator's group)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connections

from hives.events import FLEET_GROUP
from tenants.permissions import may_operate
from web.ui.live import FleetParts, render_parts
from web.ws import user_group

logger = logging.getLogger("web.fleet")

CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
MIN_INTERVAL = 0.35  # seconds between two renders: at most ~3 a second per process
TICK = 5.0  # seconds: re-check the session; re-render for heartbeat ages and stale hives
MAX_PER_USER = 8  # open fleet sockets of one operator in one queen process
MAX_PER_PROCESS = 200
# A render waits at least this many times the last render's own duration after it: the
# feed takes at most ~1/(1+SLOW_FACTOR) of the process however busy the fleet is.
SLOW_FACTOR = 4.0
MAX_RETRY_PAUSE = 30.0  # seconds: the longest wait before retrying a render that failed
CLOSE_ERROR = 1011
DB_SESSION_ENGINES = {
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
}


def _allowed(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and may_operate(user, "fleet"))


class FleetFeed:
    """The fleet as last rendered in this process (one per event loop), and the sockets
    that show it."""

    def __init__(self) -> None:
        self.sockets: set[FleetConsumer] = set()
        self.current: FleetParts | None = None
        self.generation = 0  # moves on with every announced change (and tick)
        self.rendered_generation = -1
        self.rendered_at = 0.0  # monotonic end of the last render
        self.render_cost = 0.0  # seconds the last render took
        self.renders = 0
        self.failures = 0  # renders failed in a row (their retries back off)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def count(self, user_id: int) -> int:
        return sum(1 for s in self.sockets if s.user_id == user_id)

    def changed(self, min_interval: float) -> None:
        """A change was announced (every socket hears it: one render for all)."""
        self.generation += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._follow(min_interval))

    def refresh(self, max_age: float, min_interval: float) -> None:
        """A tick: render again if the last render is older than `max_age` (ages, stale
        hives), once for all the sockets whose ticks fall in that time."""
        if time.monotonic() - self.rendered_at >= max_age * 0.9:
            self.changed(min_interval)

    def leave(self, socket: FleetConsumer) -> None:
        self.sockets.discard(socket)
        if not self.sockets:
            # Nobody hears the announcements now: the next socket renders afresh.
            self.generation += 1
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()
            self._task = None

    async def latest(self, max_age: float) -> FleetParts:
        """The current pieces for a socket that just opened: rendered afresh if a change
        came since the last render (or it is older than `max_age`); a render in flight is
        shared."""
        async with self._lock:
            fresh = time.monotonic() - self.rendered_at < max_age
            if self.current is None or self.rendered_generation != self.generation or not fresh:
                await self._render()
                await self._fan_out()
            assert self.current is not None
            return self.current

    async def _follow(self, min_interval: float) -> None:
        while self.sockets and self.rendered_generation != self.generation:
            pause = max(min_interval, SLOW_FACTOR * self.render_cost)
            if self.failures:
                pause = max(pause, min(MAX_RETRY_PAUSE, 2.0**self.failures))
            wait = self.rendered_at + pause - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._lock:
                if self.rendered_generation == self.generation:
                    break
                try:
                    await self._render()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.failures += 1
                    if self.failures == 1 or self.failures % 10 == 0:
                        logger.exception("rendering the fleet failed (%d in a row)", self.failures)
                    self.rendered_at = time.monotonic()
                    continue
                self.failures = 0
                await self._fan_out()

    async def _fan_out(self) -> None:
        """The same pieces to every socket (each sends only what its page lacks), but none
        to a socket whose session has ended since: one query for all of them. One socket
        failing never keeps the render from the others."""
        if self.current is None:
            return
        sockets = list(self.sockets)
        alive = await database_sync_to_async(_live_sessions)([s.session_key for s in sockets])
        for socket in sockets:
            try:
                if alive is not None and socket.session_key not in alive:
                    await socket._stop()  # signed out or expired: not one more push
                    continue
                await socket.deliver(self.current)
            except Exception:
                logger.exception("could not push the fleet to a socket")

    async def _render(self) -> None:
        generation = self.generation
        started = time.monotonic()
        # Off the thread that runs the process's other sync work (hive heartbeats, requests'
        # database calls): a large fleet's render must not hold them up. Renders never
        # overlap (the lock), so render_parts' card cache sees one thread at a time.
        parts = await database_sync_to_async(_render, thread_sensitive=False)()
        self.rendered_at = time.monotonic()
        self.render_cost = self.rendered_at - started
        self.rendered_generation = generation
        self.current = parts
        self.renders += 1


def _render() -> FleetParts:
    """render_parts on a thread of the executor, which keeps no database connection open."""
    try:
        return render_parts()
    finally:
        connections.close_all()


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FleetFeed] = (
    weakref.WeakKeyDictionary()
)


def fleet_feed() -> FleetFeed:
    """This process's feed (one per event loop: a queen runs one)."""
    loop = asyncio.get_running_loop()
    feed = _feeds.get(loop)
    if feed is None:
        feed = _feeds[loop] = FleetFeed()
    return feed


def _live_sessions(keys: list[str | None]) -> set[str | None] | None:
    """Which of these session keys still name a session that has not expired (one query),
    or None when that cannot be told here (another session engine, a database error): the
    sockets' ticks check them then."""
    if settings.SESSION_ENGINE not in DB_SESSION_ENGINES:
        return None
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    wanted = [k for k in keys if k]
    try:
        return set(
            Session.objects.filter(
                session_key__in=wanted, expire_date__gt=timezone.now()
            ).values_list("session_key", flat=True)
        )
    except Exception:
        logger.warning("could not read the fleet sockets' sessions", exc_info=True)
        return None


def _session_store(session_key: str | None) -> Any:
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


class FleetConsumer(AsyncWebsocketConsumer):
    min_interval = MIN_INTERVAL
    tick = TICK
    max_per_user = MAX_PER_USER
    max_per_process = MAX_PER_PROCESS

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.user_id: int | None = None
        session = self.scope.get("session")
        self.session_key: str | None = getattr(session, "session_key", None)
        self.sent: FleetParts | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._groups: list[str] = []
        self.feed = fleet_feed()
        if not await database_sync_to_async(_allowed)(self.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user_id = int(self.user.pk)
        if (
            self.feed.count(self.user_id) >= self.max_per_user
            or len(self.feed.sockets) >= self.max_per_process
        ):
            logger.warning("fleet socket refused: too many open (operator %s)", self.user_id)
            await self.close(code=CLOSE_TOO_MANY)
            return
        self.feed.sockets.add(self)  # its slot, before anything is awaited
        try:
            await self.accept()
            for group in (FLEET_GROUP, user_group(self.user_id)):
                await self.channel_layer.group_add(group, self.channel_name)
                self._groups.append(group)
            await self.deliver(await self.feed.latest(self.tick))
            self._ticker = asyncio.ensure_future(self._tick())
        except BaseException as exc:
            # Channels runs no disconnect() after a failed connect(): give the slot back
            # here, or every retry of the page (htmx reconnects) leaks one until 4429.
            await self._release()
            if not isinstance(exc, Exception):
                raise
            logger.exception("fleet socket could not start")
            with contextlib.suppress(Exception):
                await self.close(code=CLOSE_ERROR)

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        """Give back the socket's slot, its ticker and its groups (idempotent)."""
        ticker = getattr(self, "_ticker", None)
        if ticker is not None and ticker is not asyncio.current_task():
            ticker.cancel()
        feed = getattr(self, "feed", None)
        if feed is not None:
            feed.leave(self)
        groups, self._groups = getattr(self, "_groups", []), []
        for group in groups:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing we act on (htmx may send form values; ignored)."""

    async def deliver(self, parts: FleetParts) -> None:
        """Send what differs from what this page shows (nothing when nothing does)."""
        if self not in self.feed.sockets or (self.sent is not None and parts.seq <= self.sent.seq):
            return
        html = parts.changed_since(self.sent)
        if html is None:
            self.sent = parts
            return
        try:
            await self.send(text_data=html)
        except Exception:
            # Not shown: `sent` stays, so the next push carries these pieces again.
            logger.warning("could not push the fleet to a socket", exc_info=True)
            return
        self.sent = parts

    # --- the hives app's announcements (hives.events.FLEET_CHANGED) -------------------

    async def fleet_changed(self, message: dict[str, Any]) -> None:
        self.feed.changed(self.min_interval)

    # --- web.signals: the operator signed out ----------------------------------------

    async def session_ended(self, message: dict[str, Any]) -> None:
        ended = message.get("session_key") or ""
        if not ended or ended == self.session_key:
            await self._stop()

    async def _stop(self) -> None:
        self.feed.leave(self)
        await self.close(code=CLOSE_FORBIDDEN)

    async def _session_user(self) -> Any:
        """The user of this socket's session read afresh: AnonymousUser once it was signed
        out elsewhere, expired, or its password changed."""
        if not self.session_key:
            return None
        user = await get_user({"session": _session_store(self.session_key)})
        return user if getattr(user, "pk", None) == self.user_id else None

    async def _still_signed_in(self) -> bool:
        """The session still names this operator, who still has the fleet permission."""
        user = await self._session_user()
        return user is not None and bool(await database_sync_to_async(_allowed)(user))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                if not await self._still_signed_in():
                    await self._stop()
                    return
                self.feed.refresh(self.tick, self.min_interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("fleet tick failed; trying again in %ss", self.tick)
