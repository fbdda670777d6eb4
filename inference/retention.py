"""Inference's record classes for gdpr's retention and its export and erasure providers
(registered in InferenceConfig.ready()): images answered by URL live until their expiry
(RBEE_IMAGE_URL_TTL), and never longer than the class's period; stored Responses API
responses (prompts and outputs) until the tenant's prompt retention days, part of their
end user's export and erased with them."""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from gdpr import providers, retention, subjects
from inference.models import GeneratedImage, StoredResponse


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
            name="inference.images",
            title="Generated images served by URL",
            purge=image_purge,
            days=1,
        )
    )
