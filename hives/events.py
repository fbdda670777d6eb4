"""Fleet changes, announced to whoever listens (the live dashboard at /ui).

The hives app says *that* the fleet changed (a hive connected, beat, went away, a worker
changed state, a download moved on); listeners read what changed themselves, from the
selectors. The message goes to one Channels group after the change is committed, so a
listener never reads the state from before it. Announcing is best effort: a channel
layer that is down must never fail a hive's heartbeat."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

logger = logging.getLogger("hives.events")

# The group every listener of fleet changes joins (the name is the hives app's; the web
# faces only subscribe to it).
FLEET_GROUP = "fleet.changes"
FLEET_CHANGED = "fleet.changed"


async def _announce(layer: Any, reason: str) -> None:
    # Bounded: a channel layer that stopped answering costs this wait, never a stalled
    # heartbeat or disconnect (the caller is a hive's database thread).
    await asyncio.wait_for(
        layer.group_send(FLEET_GROUP, {"type": FLEET_CHANGED, "reason": reason}),
        timeout=float(getattr(settings, "RBEE_REDIS_TIMEOUT", 3.0)),
    )


def _send(reason: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_announce)(layer, reason)
    except Exception:  # a listener missing one change catches up on its next tick
        logger.warning("could not announce a fleet change (%s)", reason, exc_info=True)


def announce_fleet_change(reason: str = "") -> None:
    """Tell listeners the fleet changed, once the current transaction commits (at once
    outside of one)."""
    transaction.on_commit(lambda: _send(reason))
