"""Reads for tenants and keys."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from rbee import secrets
from tenants.errors import TenantError, TenantErrorCode
from tenants.models import ApiKey, Tenant

_DUMMY_DIGEST = secrets.digest("sk-rbee-none")


@dataclass(frozen=True)
class Caller:
    """Who is calling /v1/: resolved once per request and handed to everything else."""

    tenant_id: int
    tenant_name: str
    tier: str
    api_key_id: int | None  # None: an anonymous caller on an open local queen
    api_key_prefix: str


class KeyRejected(Exception):
    """The bearer key is malformed, unknown, revoked, or its tenant is suspended."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def tenant_get(*, name: str) -> Tenant:
    try:
        return Tenant.objects.get(name=name)
    except Tenant.DoesNotExist as exc:
        raise TenantError(TenantErrorCode.NOT_FOUND, f"no tenant named {name!r}") from exc


def tenant_list() -> QuerySet[Tenant]:
    return Tenant.objects.order_by("name")


def api_key_list(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(tenant=tenant).order_by("created_at")


def api_key_get(*, tenant: Tenant, prefix: str) -> ApiKey:
    try:
        return ApiKey.objects.get(tenant=tenant, prefix=prefix)
    except ApiKey.DoesNotExist as exc:
        raise TenantError(TenantErrorCode.NOT_FOUND, f"no key {prefix!r} for {tenant}") from exc


def caller_from_key(plaintext: str) -> Caller:
    """Resolve a bearer key to its caller, or raise KeyRejected."""
    prefix = secrets.parse_prefix(ApiKey.KIND, plaintext)
    if prefix is None:
        secrets.matches(plaintext, _DUMMY_DIGEST)  # same work either way
        raise KeyRejected("malformed")
    key = (
        ApiKey.objects.select_related("tenant")
        .filter(prefix=prefix)
        .only(
            "id",
            "prefix",
            "key_hash",
            "revoked_at",
            "tenant__id",
            "tenant__name",
            "tenant__tier",
            "tenant__status",
        )
        .first()
    )
    if key is None:
        secrets.matches(plaintext, _DUMMY_DIGEST)
        raise KeyRejected("unknown")
    if not secrets.matches(plaintext, key.key_hash):
        raise KeyRejected("unknown")
    if key.revoked_at is not None:
        raise KeyRejected("revoked")
    if key.tenant.status != Tenant.Status.ACTIVE:
        raise KeyRejected("suspended")
    return Caller(
        tenant_id=key.tenant.id,
        tenant_name=key.tenant.name,
        tier=key.tenant.tier,
        api_key_id=key.id,
        api_key_prefix=key.prefix,
    )


def caller_anonymous(*, tenant_name: str) -> Caller:
    """A caller without a key, acting as `tenant_name` (only on a queen started open)."""
    t = Tenant.objects.filter(name=tenant_name, status=Tenant.Status.ACTIVE).first()
    if t is None:
        raise KeyRejected("missing")
    return Caller(
        tenant_id=t.id, tenant_name=t.name, tier=t.tier, api_key_id=None, api_key_prefix=""
    )
