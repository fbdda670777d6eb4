"""Writes of the web faces: one-time sign-in links for the machine's owner."""

from __future__ import annotations

import secrets as stdlib_secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from kernel import secrets
from tenants import services as tenant_services
from tenants.models import OPERATOR_AREAS
from web.models import LoginLink

# The operator `rbee up` signs its owner in as (created on the first run: whoever runs
# `rbee up` owns the box, so the account holds every area).
OWNER = "owner"
LINK_TTL = timedelta(minutes=15)
TOKEN_BYTES = 32


def owner_operator_ensure(*, actor: str) -> Any:
    """The owner's operator account, made on first use with every area and a random
    password nobody knows (sign in with a login link; `rbee operator` can set one)."""
    User = get_user_model()
    user = User.objects.filter(username=OWNER).first()
    if user is None:
        user = tenant_services.operator_create(
            username=OWNER,
            password=stdlib_secrets.token_urlsafe(32),
            areas=list(OPERATOR_AREAS),
            superuser=True,
            actor=actor,
        )
    return user


def login_link_create(*, user: Any, ttl: timedelta = LINK_TTL) -> str:
    """A new single-use link token for `user`, valid for `ttl`; only its hash is kept.
    Links of this user that expired are deleted on the way."""
    token = stdlib_secrets.token_urlsafe(TOKEN_BYTES)
    with transaction.atomic():
        LoginLink.objects.filter(user=user, expires_at__lt=timezone.now()).delete()
        LoginLink.objects.create(
            user=user, token_hash=secrets.digest(token), expires_at=timezone.now() + ttl
        )
    return token


def login_link_redeem(*, token: str) -> Any | None:
    """The user a valid, unused, unexpired link signs in, marking it used (once: two
    redemptions racing find one winner); None otherwise."""
    if not token or len(token) > 200:
        return None
    with transaction.atomic():
        link = (
            LoginLink.objects.select_for_update()
            .select_related("user")
            .filter(token_hash=secrets.digest(token))
            .first()
        )
        if link is None or not secrets.matches(token, link.token_hash):
            return None
        if link.used_at is not None or link.expires_at <= timezone.now():
            return None
        if not link.user.is_active:
            return None
        link.used_at = timezone.now()
        link.save(update_fields=["used_at"])
        return link.user
