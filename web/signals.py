"""Signing out ends the live views of that session at once (not at their next tick):
the user's sockets hear it through their group (web.ws.user_group) and close."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from web.ws import user_group

logger = logging.getLogger("web.signals")

SESSION_ENDED = "session.ended"


@receiver(user_logged_out, dispatch_uid="web.signals.end_live_views")
def end_live_views(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Sent by logout() before the session is flushed: its key names the sockets to close
    (every socket of the user where it is unknown)."""
    if user is None or getattr(user, "pk", None) is None:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None) or ""
    try:
        async_to_sync(layer.group_send)(
            user_group(user.pk), {"type": SESSION_ENDED, "session_key": key}
        )
    except Exception:  # the sockets still stop at their next tick (the session is gone)
        logger.warning("could not tell the live views of a sign-out", exc_info=True)
