"""The queen's side of an install: the hive's token and record, and what the queen sees.

The installer runs on the queen's machine, with its database (like `rbee hive token`),
through the hives app's services and selectors. These functions are synchronous ORM
code: the installer calls them in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from hives import selectors, services


@dataclass(frozen=True)
class HiveView:
    name: str
    live: bool  # connected, heard from lately, enabled, token valid: jobs may go to it
    status: str  # online, offline, revoked, disabled
    version: str
    region: str
    connected_at: datetime | None
    heartbeat_age: float | None  # seconds since its last heartbeat
    devices: list[dict[str, Any]] = field(default_factory=list)
    workers: list[tuple[str, str, str]] = field(default_factory=list)  # model, device, state
    pending: list[str] = field(default_factory=list)  # models waiting for approval


def hive_view(*, name: str) -> HiveView | None:
    hive = selectors.hive_get_with_workers(name=name)
    if hive is None:
        return None
    live = selectors.live_hives().filter(pk=hive.pk).exists()
    status = "revoked" if hive.token_revoked else "disabled" if hive.disabled else hive.status
    age = (
        (timezone.now() - hive.last_seen_at).total_seconds()
        if hive.last_seen_at is not None
        else None
    )
    return HiveView(
        name=hive.name,
        live=live,
        status=status,
        version=hive.version,
        region=hive.region,
        connected_at=hive.connected_at,
        heartbeat_age=age,
        devices=list(hive.devices or []),
        workers=[(w.model.name, w.device, w.state) for w in hive.workers.all()],
        pending=[p.model_name for p in selectors.pending_models(hive_name=name)],
    )


def token_is_current(*, name: str, token: str) -> bool:
    """Whether `token` is the hive `name`'s current, unrevoked token."""
    hive = selectors.hive_for_token(token)
    return hive is not None and hive.name == name


def token_issue(*, name: str, region: str | None, trust_models: bool | None, actor: str) -> str:
    """A new token for the hive `name` (created if new); the old one stops working."""
    _, token = services.hive_token_create(
        name=name, trust_models=trust_models, region=region, actor=actor
    )
    return token


def record_update(*, name: str, region: str | None, trust_models: bool | None, actor: str) -> None:
    """hives.conf's Region and TrustModels as the operator's record (`rbee hive set`)."""
    if region is not None or trust_models is not None:
        services.hive_update(name=name, region=region, trust_models=trust_models, actor=actor)


def token_revoke(*, name: str, actor: str) -> bool:
    """Revoke the hive's token; False when the queen has no such hive."""
    if selectors.hive_get_with_workers(name=name) is None:
        return False
    services.hive_revoke(name=name, actor=actor)
    return True


def public_url() -> str:
    """RBEE_PUBLIC_URL: where people (and hives) reach this queen ('' when unset)."""
    return str(getattr(settings, "RBEE_PUBLIC_URL", "") or "")
