"""Video jobs in the database: the tenant's pages, completion and failure, the stale
sweep of a dead queen's jobs, expiry by retention (legal holds respected), and GDPR
export and erasure of an end user's videos through the registered provider."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from gdpr import audit, providers, retention, subjects
from inference import selectors, services
from inference.models import Video, VideoAsset
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_create

pytestmark = pytest.mark.django_db

RESULT = {
    "video_b64": base64.b64encode(b"\x00\x00\x00\x18ftypisom").decode(),
    "thumbnail_b64": base64.b64encode(b"RIFF....WEBP").decode(),
    "spritesheet_b64": base64.b64encode(b"\xff\xd8\xff").decode(),
    "size": "64x64",
}


@pytest.fixture(autouse=True)
def _home(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))
    audit._cache.clear()


def make(tenant: Tenant, *, end_user: str = "", queen: str = "elsewhere:1:abc") -> Video:
    return services.video_create(
        tenant_id=tenant.pk,
        model="tiny-video",
        prompt="a bee",
        seconds="4",
        size="",
        end_user=end_user,
        queen=queen,
    )


def test_pages_are_the_tenants_own_in_a_stable_order() -> None:
    acme, other = tenant_create(name="acme"), tenant_create(name="other")
    mine = [make(acme) for _ in range(5)]
    theirs = make(other)
    # Ties on created_at are broken by id, so a cursor never skips or repeats one.
    Video.objects.filter(tenant=acme).update(created_at=timezone.now())
    everything, more = selectors.video_list(tenant_id=acme.pk, limit=100, order="desc", after=None)
    assert not more and {v.id for v in everything} == {v.id for v in mine}
    paged, after = [], None
    while True:
        page, more = selectors.video_list(tenant_id=acme.pk, limit=2, order="desc", after=after)
        paged += [v.id for v in page]
        if not more:
            break
        after = page[-1].id
    assert paged == [v.id for v in everything]
    asc, _ = selectors.video_list(tenant_id=acme.pk, limit=100, order="asc", after=None)
    assert [v.id for v in asc] == paged[::-1]
    # Another tenant's id is not a cursor, nor a video, nor deletable here.
    assert selectors.video_list(tenant_id=acme.pk, limit=2, order="desc", after=theirs.id) == (
        [],
        False,
    )
    assert selectors.video_get(tenant_id=acme.pk, video_id=theirs.id) is None
    assert services.video_delete(tenant_id=acme.pk, video_id=theirs.id) is False
    assert Video.objects.filter(id=theirs.id).exists()


def test_a_completed_job_keeps_its_files_until_it_expires() -> None:
    acme = tenant_create(name="acme")
    video = make(acme)
    assert services.video_started(video_id=video.id, request_id="req-1")
    assert services.video_progress(video_id=video.id, progress=250)  # clamped
    assert Video.objects.get(id=video.id).progress == 99
    assert services.video_complete(video_id=video.id, result=RESULT, ttl=60)
    done = Video.objects.get(id=video.id)
    assert (done.status, done.progress, done.size) == ("completed", 100, "64x64")
    assert done.expires_at is not None and done.completed_at is not None
    assert done.expires_at - done.completed_at == timedelta(seconds=60)
    asset = selectors.video_asset(tenant_id=acme.pk, video_id=video.id, variant="video")
    assert asset is not None and bytes(asset.content)[4:8] == b"ftyp"
    assert asset.content_type == "video/mp4"
    # Ended: neither a failure nor a second result changes it.
    assert not services.video_fail(video_id=video.id, code="x", message="y", ttl=60)
    assert not services.video_complete(video_id=video.id, result=RESULT, ttl=60)
    assert VideoAsset.objects.filter(video_id=video.id).count() == 3
    # Expired: invisible at once, deleted with its files by the retention sweep.
    Video.objects.filter(id=video.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert selectors.video_get(tenant_id=acme.pk, video_id=video.id) is None
    assert selectors.video_asset(tenant_id=acme.pk, video_id=video.id, variant="video") is None
    run = retention.run(now=timezone.now())
    assert run.results["inference.videos"].deleted == 1
    assert not VideoAsset.objects.exists()


def test_a_result_without_a_video_fails_the_job() -> None:
    video = make(tenant_create(name="acme"))
    services.video_started(video_id=video.id, request_id="req-2")
    assert not services.video_complete(
        video_id=video.id, result={"video_b64": "not base64!"}, ttl=60
    )
    failed = Video.objects.get(id=video.id)
    assert (failed.status, failed.error_code) == ("failed", "worker_error")
    assert not VideoAsset.objects.exists()


def test_a_deleted_job_stops_taking_progress() -> None:
    acme = tenant_create(name="acme")
    video = make(acme)
    services.video_started(video_id=video.id, request_id="req-3")
    assert services.video_delete(tenant_id=acme.pk, video_id=video.id)
    assert not services.video_progress(video_id=video.id, progress=10)
    assert not services.video_touch(video_id=video.id)
    assert not services.video_complete(video_id=video.id, result=RESULT, ttl=60)
    assert not VideoAsset.objects.exists()


def test_the_sweep_fails_the_jobs_of_a_queen_that_went_silent() -> None:
    acme = tenant_create(name="acme")
    silent, alive, waiting = make(acme), make(acme), make(acme)
    services.video_started(video_id=silent.id, request_id="a")
    services.video_started(video_id=alive.id, request_id="b")
    old = timezone.now() - timedelta(hours=1)
    Video.objects.filter(id__in=[silent.id, alive.id, waiting.id]).update(updated_at=old)
    assert services.video_touch(video_id=alive.id)  # its queen still beats
    assert services.video_touch(video_id=waiting.id)  # queued, waiting for a slot
    n = services.video_fail_stale(now=timezone.now(), stale_seconds=600, ttl=60)
    assert n == 1
    assert Video.objects.get(id=silent.id).status == "failed"
    assert Video.objects.get(id=silent.id).error_code == "server_error"
    assert Video.objects.get(id=alive.id).status == "in_progress"
    assert Video.objects.get(id=waiting.id).status == "queued"


def test_a_held_tenant_keeps_its_expired_videos() -> None:
    held, free = tenant_create(name="held"), tenant_create(name="free")
    kept, gone = make(held), make(free)
    Video.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    retention.hold_place(reason="case 1", actor="cli", tenant_id=held.pk)
    run = retention.run(now=timezone.now())
    assert run.results["inference.videos"].held == 1
    assert set(Video.objects.values_list("id", flat=True)) == {kept.id}
    assert gone.id not in set(Video.objects.values_list("id", flat=True))


def test_an_end_users_videos_are_exported_and_erased() -> None:
    shop = tenant_create(name="shop")
    theirs = make(shop, end_user="u-42")
    services.video_started(video_id=theirs.id, request_id="r")
    services.video_complete(video_id=theirs.id, result=RESULT, ttl=3600)
    someone_else = make(shop, end_user="u-7")
    provider = providers.get("inference.videos")
    subject = subjects.end_user("shop", "u-42")
    exported = provider.export(subject)
    assert [(r["id"], r["prompt"], r["files"]) for r in exported] == [
        (theirs.id, "a bee", ["spritesheet", "thumbnail", "video"])
    ]
    assert provider.export(subjects.user("owner@shop.example")) == []
    erased = provider.erase(subject)
    assert (erased.deleted, erased.files_removed) == (1, 3)
    assert set(Video.objects.values_list("id", flat=True)) == {someone_else.id}
    assert provider.erase(subject).deleted == 0  # idempotent


@pytest.mark.django_db(transaction=True)
def test_a_job_its_queen_left_is_failed_when_its_client_polls(settings: Any) -> None:
    """The retention purge runs daily: a client polling a job whose queen went silent
    learns that it failed as soon as the job is stale, not a day later."""
    settings.RBEE_VIDEO_STALE_SECONDS = 60
    acme = tenant_create(name="acme")
    _, key = api_key_create(tenant=acme)
    left, alive, listed = make(acme), make(acme), make(acme)
    Video.objects.filter(pk__in=[left.pk, alive.pk, listed.pk]).update(
        status=Video.Status.IN_PROGRESS
    )
    silent = timezone.now() - timedelta(seconds=120)
    Video.objects.filter(pk__in=[left.pk, listed.pk]).update(updated_at=silent)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    got = Client().get(f"/v1/videos/{left.id}", **auth).json()
    assert got["status"] == "failed"
    assert got["error"]["code"] == "server_error"
    assert "stopped" in got["error"]["message"]
    assert Client().get(f"/v1/videos/{alive.id}", **auth).json()["status"] == "in_progress"
    page = Client().get("/v1/videos", **auth).json()["data"]
    assert {v["id"]: v["status"] for v in page} == {
        left.id: "failed",
        alive.id: "in_progress",
        listed.id: "failed",
    }
