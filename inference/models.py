from __future__ import annotations

from django.db import models


class SchedulerScript(models.Model):
    """A version of the Rhai scheduler script. The newest row is the one in force; every
    queen process switches to it within RBEE_SCHEDULER_CHECK_SECONDS, without a restart."""

    source = models.TextField()
    sha256 = models.CharField(max_length=64)
    origin = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"scheduler v{self.pk} ({self.sha256[:12]})"


class GeneratedImage(models.Model):
    """An image answered with response_format=url: served from the queen, by an
    unguessable token, until it expires (RBEE_IMAGE_URL_TTL). In the database so any
    queen replica can serve it."""

    token = models.CharField(max_length=64, unique=True)
    content = models.BinaryField()
    content_type = models.CharField(max_length=64, default="image/png")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"image {self.token[:8]}..."
