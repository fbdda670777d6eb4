"""Reads for tenants and keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from kernel import regions, secrets
from tenants.errors import KeyRejected, TenantError, TenantErrorCode
from tenants.models import ApiKey, Invitation, Membership, Plan, Tenant

_DUMMY_DIGEST = secrets.digest("sk-rbee-none")


@dataclass(frozen=True)
class Caller:
    """Who is calling /v1/: resolved once per request and handed to everything else,
    with what the tenant's plan (and its overrides) allows and what the key may do."""

    tenant_id: int
    tenant_name: str
    tier: str
    api_key_id: int | None  # None: an anonymous caller on an open local queen
    api_key_prefix: str
    # The plan's limits with the tenant's overrides applied; None means unlimited.
    limits: dict[str, int | None] = field(default_factory=dict)
    allowed_models: tuple[str, ...] = ()  # empty: every model
    scope_endpoints: tuple[str, ...] = ()  # empty: every endpoint
    scope_models: tuple[str, ...] = ()  # empty: every model the plan allows
    # An operator's caller (a key with the `operator` scope, or the open local queen):
    # may see which hive and device served it (X-Rbee-Worker) and the workers' own
    # error texts. Tenants' callers see neither.
    operator: bool = False
    queue_weight: int = 1  # the plan's share of a busy model's queue
    max_priority: str = "interactive"  # the plan's highest priority ("batch": batch only)
    # Where its requests may run: every constraint here (the tenant's data region, then
    # the key's) must hold for a hive's operator-set region (kernel.regions.within_all).
    data_regions: tuple[str, ...] = ()
    # Whether its requests' prompts and responses may be kept (gdpr/exchanges.py):
    # "off" (default), "consent" (end users who consented), "contract"; and for how long.
    prompt_retention: str = "off"
    prompt_retention_days: int = 30

    @property
    def data_region(self) -> str:
        """The effective data region ("" = anywhere). Constraints that do not overlap (a
        key's region outside a since-changed tenant's) have none: every region is refused."""
        try:
            return regions.narrowest(self.data_regions)
        except regions.RegionError:
            return "(none: " + " and ".join(self.data_regions) + ")"

    def may_run_in(self, region: str) -> bool:
        """Whether a hive the operator placed in `region` may serve this caller."""
        return regions.within_all(region, self.data_regions)


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


_PLAN_FIELDS = (
    "tenant__plan__name",
    "tenant__plan__allowed_models",
    "tenant__plan__requests_per_day",
    "tenant__plan__tokens_per_day",
    "tenant__plan__images_per_day",
    "tenant__plan__audio_seconds_per_day",
    "tenant__plan__characters_per_day",
    "tenant__plan__requests_per_minute",
    "tenant__plan__tokens_per_minute",
    "tenant__plan__max_concurrent",
    "tenant__plan__queue_weight",
    "tenant__plan__max_priority",
)


def caller_from_key(plaintext: str, generation: object = None) -> Caller:
    """Resolve a bearer key to its caller, or raise KeyRejected. With the generation of
    CALLERS read before this call (kernel.generations.current), the answer is kept for
    `caller_cached`."""
    prefix = secrets.parse_prefix(ApiKey.KIND, plaintext)
    if prefix is None:
        secrets.matches(plaintext, _DUMMY_DIGEST)  # same work either way
        raise KeyRejected("malformed")
    key = (
        ApiKey.objects.select_related("tenant")
        .filter(prefix=prefix)
        .select_related("tenant__plan")
        .only(
            "id",
            "prefix",
            "key_hash",
            "revoked_at",
            "expires_at",
            "scopes",
            "tenant__id",
            "tenant__name",
            "tenant__tier",
            "tenant__status",
            "tenant__overrides",
            "tenant__data_region",
            "tenant__prompt_retention",
            "tenant__prompt_retention_days",
            "data_region",
            *_PLAN_FIELDS,
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
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise KeyRejected("expired")
    if key.tenant.status == Tenant.Status.SUSPENDED:
        raise KeyRejected("suspended")
    scopes = key.scopes if isinstance(key.scopes, dict) else {}
    caller = _caller(
        key.tenant,
        api_key_id=key.id,
        api_key_prefix=key.prefix,
        scope_endpoints=tuple(str(x) for x in scopes.get("endpoints") or ()),
        scope_models=tuple(str(x) for x in scopes.get("models") or ()),
        operator=scopes.get("operator") is True,
        data_regions=tuple(r for r in (key.tenant.data_region, key.data_region) if r),
    )
    if generation is not None:
        _remember(prefix, generation, key.key_hash, key.expires_at, caller)
    return caller


# --- the callers of keys, kept in memory ------------------------------------------------
#
# Every /v1 request resolves its bearer key; reading the key, its tenant and plan from the
# database is the largest part of what the queen adds to a request. So each process keeps
# the callers it resolved, each entry tagged with the generation of CALLERS it read before
# reading the rows. Anything that changes a key, a tenant or a plan bumps that generation
# (tenants.services.callers_changed; tenants/apps.py for saves made elsewhere, such as the
# admin), in every process at once (kernel/generations.py): a revoked key, a suspended
# tenant or a changed plan takes effect with the next request on every replica. The key
# itself is still checked against its stored hash in constant time on every request, and
# an entry also ends when its key expires or after CALLER_CACHE_MAX_AGE_S.

CALLERS = "callers"
CALLER_CACHE_MAX_AGE_S = 60.0
CALLER_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class _Kept:
    generation: object
    key_hash: str
    expires_at: datetime | None
    caller: Caller
    at: float


_kept: dict[str, _Kept] = {}


def _remember(
    prefix: str, generation: object, key_hash: str, expires_at: datetime | None, caller: Caller
) -> None:
    if len(_kept) >= CALLER_CACHE_SIZE:
        _kept.clear()  # a flood of distinct keys: start again rather than grow
    _kept[prefix] = _Kept(generation, key_hash, expires_at, caller, time.monotonic())


def caller_cached(plaintext: str, generation: object) -> Caller | None:
    """The caller of a key resolved earlier by this process, if nothing about keys,
    tenants or plans changed since (the generation is the same) and the key is still
    within its expiry; None: ask the database (caller_from_key)."""
    if generation is None:
        return None
    prefix = secrets.parse_prefix(ApiKey.KIND, plaintext)
    kept = _kept.get(prefix) if prefix is not None else None
    if kept is None or kept.generation != generation:
        return None
    if time.monotonic() - kept.at > CALLER_CACHE_MAX_AGE_S:
        return None
    if not secrets.matches(plaintext, kept.key_hash):
        return None  # the database path answers (and spends the same work) for a bad key
    if kept.expires_at is not None and kept.expires_at <= timezone.now():
        return None
    return kept.caller


def callers_forget() -> None:
    """Drop every caller this process keeps (tests; the generation does it otherwise)."""
    _kept.clear()


def effective_limits(tenant: Tenant) -> dict[str, int | None]:
    """The tenant's plan's limits with its overrides on top (None: unlimited)."""

    plan = tenant.plan
    limits: dict[str, int | None] = {
        f: (getattr(plan, f) if plan is not None else None) for f in Plan.LIMIT_FIELDS
    }
    overrides: Any = tenant.overrides if isinstance(tenant.overrides, dict) else {}
    for name, value in overrides.items():
        if name in limits:
            limits[name] = None if value is None else int(value)
    return limits


def _caller(tenant: Tenant, **extra: Any) -> Caller:
    plan = tenant.plan
    return Caller(
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        tier=plan.name if plan is not None else tenant.tier,
        limits=effective_limits(tenant),
        allowed_models=tuple(str(m) for m in (plan.allowed_models if plan else []) or ()),
        queue_weight=max(1, plan.queue_weight) if plan is not None else 1,
        max_priority=plan.max_priority if plan is not None else "interactive",
        prompt_retention=tenant.prompt_retention,
        prompt_retention_days=tenant.prompt_retention_days,
        **extra,
    )


def caller_anonymous(*, tenant_name: str) -> Caller:
    """A caller without a key, acting as `tenant_name` (only on a queen started open)."""
    t = (
        Tenant.objects.select_related("plan")
        .filter(name=tenant_name)
        .exclude(status=Tenant.Status.SUSPENDED)
        .first()
    )
    if t is None:
        raise KeyRejected("missing")
    # The open queen serves its own machine only (loopback): its caller is the operator.
    return _caller(
        t,
        api_key_id=None,
        api_key_prefix="",
        operator=True,
        data_regions=(t.data_region,) if t.data_region else (),
    )


def tenant_list_with_plans() -> QuerySet[Tenant]:
    """Every tenant by name, with its plan in the same query (for listings)."""
    return tenant_list().select_related("plan")


def api_key_find(*, tenant: Tenant, key_or_prefix: str) -> ApiKey:
    """The tenant's key given either the key itself or its prefix (as `rbee key list`
    shows it); TenantError(NOT_FOUND) otherwise. Only the prefix is looked up: a whole
    key is not checked against its hash here, since its owner is managing it."""
    prefix = secrets.parse_prefix(ApiKey.KIND, key_or_prefix) or key_or_prefix
    return api_key_get(tenant=tenant, prefix=prefix)


def plan_list() -> QuerySet[Plan]:
    return Plan.objects.order_by("name")


def plan_limits(plan: Plan) -> dict[str, int | None]:
    """The plan's limits by field (None: unlimited), in Plan.LIMIT_FIELDS order."""
    return {f: getattr(plan, f) for f in Plan.LIMIT_FIELDS}


def operator_areas(*, user: Any) -> list[str]:
    """The operators' areas `user` holds (every one for a superuser)."""
    from tenants.models import OPERATOR_AREAS

    return [area for area, perm in OPERATOR_AREAS.items() if user.is_active and user.has_perm(perm)]


def operator_list() -> list[tuple[str, bool, list[str]]]:
    """Every staff user or superuser: (username, superuser, areas)."""
    from django.contrib.auth.models import User
    from django.db.models import Q

    users = User.objects.filter(Q(is_staff=True) | Q(is_superuser=True)).order_by("username")
    return [(u.username, u.is_superuser, operator_areas(user=u)) for u in users]


# The portal's reads: every object through its tenant (another tenant's id: None).


def api_key_of(*, tenant: Tenant, key_id: int) -> ApiKey | None:
    return ApiKey.objects.filter(tenant=tenant, pk=key_id).first()


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return (
        Membership.objects.select_related("user").filter(tenant=tenant).order_by("created_at", "id")
    )


def membership_of(*, tenant: Tenant, membership_id: int) -> Membership | None:
    return (
        Membership.objects.select_related("user", "tenant")
        .filter(tenant=tenant, pk=membership_id)
        .first()
    )


def invitation_list(*, tenant: Tenant) -> QuerySet[Invitation]:
    return (
        Invitation.objects.select_related("invited_by")
        .filter(tenant=tenant)
        .order_by("-created_at", "-id")
    )


def invitation_of(*, tenant: Tenant, invitation_id: int) -> Invitation | None:
    return Invitation.objects.filter(tenant=tenant, pk=invitation_id).first()


def invitation_by_token(*, token: str) -> Invitation | None:
    """The invitation a one-time token opens (looked up by its SHA-256; None if none)."""
    if not token or len(token) > 200:
        return None
    return (
        Invitation.objects.select_related("tenant").filter(token_hash=secrets.digest(token)).first()
    )
