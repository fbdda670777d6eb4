"""Images answered as URLs: served by an unguessable token until they expire."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from inference.images import store_images as _store_images
from inference.models import GeneratedImage

pytestmark = pytest.mark.django_db(transaction=True)  # the view reads on its own thread

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def test_stored_images_are_served_until_they_expire() -> None:
    (token,) = _store_images([base64.b64encode(PNG).decode()], ttl=60)
    assert len(token) >= 40
    c = Client()
    r = c.get(f"/v1/images/content/{token}.png")
    assert r.status_code == 200 and r.content == PNG and r["Content-Type"] == "image/png"
    GeneratedImage.objects.filter(token=token).update(expires_at=timezone.now() - timedelta(1))
    r = c.get(f"/v1/images/content/{token}.png")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # Storing more sweeps the expired ones away.
    _store_images([base64.b64encode(PNG).decode()], ttl=60)
    assert not GeneratedImage.objects.filter(token=token).exists()


def test_unknown_or_malformed_tokens_are_404() -> None:
    c = Client()
    assert c.get("/v1/images/content/" + "a" * 43 + ".png").status_code == 404
    assert c.get("/v1/images/content/../../etc/passwd").status_code == 404
    assert c.post("/v1/images/content/" + "a" * 43 + ".png").status_code == 405
