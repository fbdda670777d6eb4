"""/ui/ws/fleet: the fleet page's live feed.

A signed-in operator with the fleet permission gets the whole fleet fragment at once
(on every connect and reconnect: nothing is assumed about what the page still shows),
then again whenever the hives app announces a change (hives.events), coalesced to at most
one render per MIN_INTERVAL however many changes arrive, and on a periodic tick so that a
hive whose heartbeat gets old turns stale without any event. htmx's ws extension swaps
the fragment by its id; it reconnects by itself when the queen restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from hives.events import FLEET_GROUP
from tenants.permissions import may_operate
from web.ui.live import render_fleet

logger = logging.getLogger("web.fleet")

CLOSE_FORBIDDEN = 4403
MIN_INTERVAL = 0.35  # seconds between two pushes: at most ~3 renders a second
TICK = 5.0  # seconds: re-render for heartbeat ages and stale transitions


def _allowed(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and may_operate(user, "fleet"))


def _still_allowed(user_id: int) -> bool:
    """Read afresh (a user object caches its permissions): still active, still fleet."""
    from django.contrib.auth import get_user_model

    return _allowed(get_user_model().objects.filter(pk=user_id).first())


class FleetConsumer(AsyncWebsocketConsumer):
    min_interval = MIN_INTERVAL
    tick = TICK

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self._last_push = 0.0
        self._last_html = ""
        self._pending: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._joined = False
        if not await database_sync_to_async(_allowed)(self.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        await self.channel_layer.group_add(FLEET_GROUP, self.channel_name)
        self._joined = True
        await self._push(force=True)
        self._ticker = asyncio.ensure_future(self._tick())

    async def disconnect(self, code: int) -> None:
        for task in (getattr(self, "_pending", None), getattr(self, "_ticker", None)):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if getattr(self, "_joined", False):
            self._joined = False
            await self.channel_layer.group_discard(FLEET_GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing we act on (htmx may send form values; ignored)."""

    # --- the hives app's announcements (hives.events.FLEET_CHANGED) -------------------

    async def fleet_changed(self, message: dict[str, Any]) -> None:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._coalesced())

    async def _coalesced(self) -> None:
        """One render for every change of a burst: wait out the interval since the last
        push, then render what the database says at that moment."""
        wait = self._last_push + self.min_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._pending = None
        await self._push()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                if not await database_sync_to_async(_still_allowed)(self.user.pk):
                    # The permission was taken away (or the user disabled): stop feeding.
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
                await self._push()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("fleet tick failed; trying again in %ss", self.tick)

    async def _push(self, *, force: bool = False) -> None:
        self._last_push = time.monotonic()
        html = await database_sync_to_async(render_fleet)()
        if force or html != self._last_html:
            self._last_html = html
            with contextlib.suppress(Exception):
                await self.send(text_data=html)
