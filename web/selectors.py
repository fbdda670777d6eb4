"""Reads of the web faces."""

from __future__ import annotations

from django.utils import timezone

from kernel import secrets
from web.models import LoginLink


def login_link_usable(*, token: str) -> bool:
    """Whether the link would sign someone in now (without using it up)."""
    if not token or len(token) > 200:
        return False
    return LoginLink.objects.filter(
        token_hash=secrets.digest(token), used_at__isnull=True, expires_at__gt=timezone.now()
    ).exists()
