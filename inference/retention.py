"""Inference's record classes for gdpr's retention (registered in InferenceConfig.ready()):
images answered by URL live until their expiry (RBEE_IMAGE_URL_TTL), and never longer
than the class's period."""

from __future__ import annotations

from django.db.models import Q

from gdpr import retention
from inference.models import GeneratedImage


def image_purge(p: retention.Purge) -> retention.Purged:
    # Images carry no tenant or subject (an unguessable token only): holds cannot name them.
    n, _ = GeneratedImage.objects.filter(
        Q(expires_at__lt=p.now) | Q(created_at__lt=p.cutoff())
    ).delete()
    return retention.Purged(deleted=n)


def register() -> None:
    retention.register(
        retention.RecordClass(
            name="inference.images",
            title="Generated images served by URL",
            purge=image_purge,
            days=1,
        )
    )
