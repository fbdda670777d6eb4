"""Writes for tenants and keys."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from rbee import secrets
from tenants.errors import TenantError, TenantErrorCode
from tenants.models import ApiKey, Tenant


def tenant_create(*, name: str, tier: str = "free") -> Tenant:
    if not name or slugify(name) != name:
        raise TenantError(
            TenantErrorCode.INVALID,
            f"invalid tenant name {name!r}: use lowercase letters, digits, '-' and '_'",
        )
    try:
        with transaction.atomic():
            return Tenant.objects.create(name=name, tier=tier)
    except IntegrityError as exc:
        raise TenantError(
            TenantErrorCode.ALREADY_EXISTS, f"tenant {name!r} already exists"
        ) from exc


def tenant_get_or_create(*, name: str, tier: str = "free") -> tuple[Tenant, bool]:
    with transaction.atomic():
        return Tenant.objects.get_or_create(name=name, defaults={"tier": tier})


def api_key_create(*, tenant: Tenant, name: str = "") -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext, which is never stored."""
    new = secrets.make(ApiKey.KIND)
    with transaction.atomic():
        key = ApiKey.objects.create(
            tenant=tenant, name=name, prefix=new.prefix, key_hash=new.digest
        )
    return key, new.plaintext


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    with transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    api_key.refresh_from_db()
    return api_key
