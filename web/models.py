"""The web faces' own table: one-time sign-in links (`rbee up` prints one)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class LoginLink(models.Model):
    """A single-use, short-lived link that signs its holder in as `user`. Only the
    SHA-256 of its secret is stored; the link itself is printed once and never logged."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    token_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"login link for user #{self.user_id}"
