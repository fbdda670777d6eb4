"""Kept prompts and responses (debugging), only under a legal basis and only for a time.

Off by default. The request path (inference) decides per request, from the tenant's
setting (tenants.Tenant.prompt_retention: "off", "consent", "contract") and, under
"consent", the end user's recorded consent to `prompt_retention` in the consent ledger
(`basis_for`). A kept exchange expires after the tenant's days and is purged by the
retention run; it is part of its end user's export and erased with them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from gdpr import consent, retention, subjects
from gdpr.models import StoredExchange
from gdpr.providers import Erased

OFF, CONSENT, CONTRACT = "off", "consent", "contract"


def basis_for(*, setting: str, tenant: str, end_user: str) -> str:
    """The legal basis for keeping this request's exchange ("" = none: do not keep).
    Sync (database, only under "consent" with an end user named)."""
    if setting == CONTRACT:
        return CONTRACT
    if setting != CONSENT or not end_user:
        return ""
    try:
        who = subjects.end_user(tenant, end_user)
    except subjects.SubjectError:
        return ""
    return CONSENT if consent.prompt_retention_allowed(tenant_contract=False, end_user=who) else ""


def exchange_keep(
    *,
    tenant_id: int,
    tenant: str,
    request_id: str,
    end_user: str,
    basis: str,
    model: str,
    prompt: str,
    response: str,
    days: int,
) -> StoredExchange | None:
    """Keep one exchange (idempotent per request id). None when there is no basis."""
    if basis not in (CONSENT, CONTRACT):
        return None
    subject = str(subjects.end_user(tenant, end_user)) if end_user else ""
    with transaction.atomic():
        row, _ = StoredExchange.objects.get_or_create(
            request_id=request_id,
            defaults={
                "tenant_id": tenant_id,
                "subject": subject,
                "basis": basis,
                "model": model,
                "prompt": prompt,
                "response": response,
                "expires_at": timezone.now() + timedelta(days=max(1, days)),
            },
        )
    return row


def _purge(p: retention.Purge) -> retention.Purged:
    past = StoredExchange.objects.filter(Q(expires_at__lt=p.now) | Q(created_at__lt=p.cutoff()))
    held = Q(tenant_id__in=sorted(p.holds.tenants)) | Q(subject__in=sorted(p.holds.subjects))
    out = retention.Purged(held=past.filter(held).count())
    out.deleted, _ = past.exclude(held).delete()
    return out


def _export(subject: subjects.Subject) -> list[dict[str, Any]]:
    return [
        {
            "request_id": r.request_id,
            "basis": r.basis,
            "model": r.model,
            "prompt": r.prompt,
            "response": r.response,
            "created_at": r.created_at.isoformat(),
            "expires_at": r.expires_at.isoformat(),
        }
        for r in StoredExchange.objects.filter(subject=str(subject)).order_by("created_at")
    ]


def _erase(subject: subjects.Subject) -> Erased:
    n, _ = StoredExchange.objects.filter(subject=str(subject)).delete()
    return Erased(store="gdpr.exchanges", deleted=n)


def register() -> None:
    retention.register(
        retention.RecordClass(
            name="gdpr.exchanges",
            title="Kept prompts and responses (debugging; consent or contract)",
            purge=_purge,
            days=90,  # a ceiling over the tenants' own (shorter) expiry
        )
    )
    from gdpr import providers

    providers.register(
        providers.Provider(
            name="gdpr.exchanges",
            title="Kept prompts and responses",
            categories=("prompts and responses (may contain any personal data)",),
            purposes=("debugging, only with the end user's consent or the tenant's contract",),
            retention="the tenant's setting (30 days by default), at most 90 days",
            export=_export,
            erase=_erase,
        )
    )
