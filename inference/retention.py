"""Inference's record classes for gdpr's retention and its export and erasure providers
(registered in InferenceConfig.ready()): images answered by URL live until their expiry
(RBEE_IMAGE_URL_TTL), and never longer than the class's period; so do videos
(RBEE_VIDEO_TTL after their job ended), whose sweep also fails the jobs that a dead queen
left queued or running; stored Responses API responses (prompts and outputs) until the
tenant's prompt retention days. Responses and videos are part of their end user's export
and erased with them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q

from gdpr import providers, retention, subjects
from gdpr.providers import Erased, Provider
from gdpr.providers import register as register_provider
from inference.models import GeneratedImage, StoredResponse, Video, VideoAsset
from inference.services import video_fail_stale


def image_purge(p: retention.Purge) -> retention.Purged:
    # Images carry no tenant or subject (an unguessable token only): holds cannot name them.
    n, _ = GeneratedImage.objects.filter(
        Q(expires_at__lt=p.now) | Q(created_at__lt=p.cutoff())
    ).delete()
    return retention.Purged(deleted=n)


def response_purge(p: retention.Purge) -> retention.Purged:
    past = StoredResponse.objects.filter(Q(expires_at__lt=p.now) | Q(created_at__lt=p.cutoff()))
    held = Q(tenant_id__in=sorted(p.holds.tenants)) | Q(subject__in=sorted(p.holds.subjects))
    out = retention.Purged(held=past.filter(held).count())
    out.deleted, _ = past.exclude(held).delete()
    return out


def response_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    return [
        {
            "response_id": r.response_id,
            "basis": r.basis,
            "model": r.model,
            "input_items": r.input_items,
            "output": r.body.get("output", []),
            "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat(),
        }
        for r in StoredResponse.objects.filter(subject=str(subject)).order_by("created_at")
    ]


def response_erase(subject: subjects.Subject) -> providers.Erased:
    """The subject's stored responses, and every later turn that continued one of them
    (its `history` is a copy of theirs), whoever that turn's end user was. A response
    id is unique, and a turn continues only its own tenant's (responses.bind)."""
    found = set(
        StoredResponse.objects.filter(subject=str(subject)).values_list("response_id", flat=True)
    )
    erase = set(found)
    while found:
        later = StoredResponse.objects.filter(body__previous_response_id__in=sorted(found))
        found = set(later.values_list("response_id", flat=True)) - erase
        erase |= found
    n, _ = StoredResponse.objects.filter(response_id__in=sorted(erase)).delete()
    return providers.Erased(store="inference.responses", deleted=n)


def video_purge(p: retention.Purge) -> retention.Purged:
    """Delete the videos (and their files) past their expiry or the class's period,
    except those of held tenants or end users; fail the jobs a dead queen left."""
    video_fail_stale(
        now=p.now, stale_seconds=settings.RBEE_VIDEO_STALE_SECONDS, ttl=settings.RBEE_VIDEO_TTL
    )
    past = Video.objects.filter(Q(expires_at__lt=p.now) | Q(created_at__lt=p.cutoff()))
    held = Q(tenant_id__in=sorted(p.holds.tenants))
    for subject in sorted(p.holds.subjects):
        try:
            parsed = subjects.parse(subject)
        except subjects.SubjectError:
            continue
        if parsed.kind == subjects.END_USER:
            held |= Q(tenant__name=parsed.tenant, end_user=parsed.end_user)
    out = retention.Purged(held=past.filter(held).count())
    _, by_model = past.exclude(held).delete()  # the files go with them (cascade)
    out.deleted = by_model.get(Video._meta.label, 0)
    return out


def _subject_videos(subject: subjects.Subject) -> Any:
    if subject.kind != subjects.END_USER:
        return Video.objects.none()
    return Video.objects.filter(tenant__name=subject.tenant, end_user=subject.end_user)


def video_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    return [
        {
            "id": v.id,
            "model": v.model,
            "prompt": v.prompt,
            "seconds": v.seconds,
            "size": v.size,
            "status": v.status,
            "created_at": v.created_at.isoformat(),
            "expires_at": v.expires_at.isoformat() if v.expires_at else None,
            "files": sorted(v.assets.values_list("variant", flat=True)),
        }
        for v in _subject_videos(subject).order_by("created_at", "id")
    ]


def video_erase(subject: subjects.Subject) -> Erased:
    videos = _subject_videos(subject)
    n = videos.count()
    files = VideoAsset.objects.filter(video__in=videos).count()
    videos.delete()
    return Erased(store="inference.videos", deleted=n, files_removed=files)


def register() -> None:
    retention.register(
        retention.RecordClass(
            name="inference.responses",
            title="Stored Responses API responses (store; consent or contract)",
            purge=response_purge,
            days=90,  # a ceiling over the tenants' own (shorter) expiry, as kept exchanges
        )
    )
    providers.register(
        providers.Provider(
            name="inference.responses",
            title="Stored Responses API responses",
            categories=("prompts and responses (may contain any personal data)",),
            purposes=(
                "continuing a conversation (previous_response_id) and reading it back, only "
                "with the end user's consent or the tenant's contract",
            ),
            retention="the tenant's prompt retention setting (30 days by default), at most 90 days",
            export=response_export,
            erase=response_erase,
            data_subjects=("tenants' end users",),
        )
    )
    retention.register(
        retention.RecordClass(
            name="inference.videos",
            title="Generated videos and their prompts",
            purge=video_purge,
            days=7,  # a ceiling over RBEE_VIDEO_TTL (a day by default)
        )
    )
    register_provider(
        Provider(
            name="inference.videos",
            title="Videos generated for a tenant's end user",
            categories=("end user: the tenant's user id, video prompts and the videos",),
            purposes=("providing the video generation the tenant asked for (Art. 6(1)(b))",),
            retention="until the video expires (a day by default, at most 7 days)",
            data_subjects=("tenants' end users",),
            export=video_export,
            erase=video_erase,
        )
    )

    retention.register(
        retention.RecordClass(
            name="inference.images",
            title="Generated images served by URL",
            purge=image_purge,
            days=1,
        )
    )
