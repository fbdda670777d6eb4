"""The recent scheduling decisions of this queen process, for /ui/scheduler: a bounded ring
(RBEE_SCHEDULER_DECISIONS_KEPT) in memory, never the database. One entry per request that
reached the scheduler: where route_task (or the default policy) sent it and why, or that
should_admit refused it. Each queen replica shows its own; a restart starts empty."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Decided:
    at: float  # seconds since the epoch
    kind: str  # "route" or "admission"
    model: str
    tenant: str
    source: str  # "script" or "default": who decided
    outcome: str  # "hive/device", or "rejected (429)" / "denied (403)"
    reason: str  # why, in words
    version: int  # the scheduler script version in force (0: none)


_lock = threading.Lock()
_ring: deque[Decided] | None = None


def _kept() -> int:
    from django.conf import settings

    return max(1, int(getattr(settings, "RBEE_SCHEDULER_DECISIONS_KEPT", 200)))


def note(
    *,
    kind: str,
    model: str,
    tenant: str,
    source: str,
    outcome: str,
    reason: str,
    version: int,
) -> None:
    """Remember one decision (the oldest goes when the ring is full)."""
    global _ring
    entry = Decided(time.time(), kind, model, tenant, source, outcome, reason[:500], version)
    with _lock:
        if _ring is None:
            _ring = deque(maxlen=_kept())
        _ring.append(entry)


def recent(limit: int = 50) -> list[Decided]:
    """The newest decisions first, at most `limit`."""
    with _lock:
        items = list(_ring or ())
    return items[::-1][: max(0, limit)]


def clear() -> None:
    global _ring
    with _lock:
        _ring = None
