"""Writes for tenants and keys."""

from __future__ import annotations

import hashlib
import hmac as stdlib_hmac
import secrets as stdlib_secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from django.utils.text import slugify

from gdpr import audit, subjects
from gdpr.actions import AuditAction
from kernel import generations, regions, secrets
from tenants.actors import SYSTEM, Actor, user_subject
from tenants.errors import TenantError, TenantErrorCode
from tenants.models import OPERATOR_AREAS, ApiKey, Invitation, Membership, Plan, Tenant
from tenants.selectors import CALLERS

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def callers_changed() -> None:
    """Keys, tenants or plans changed: every queen process drops the callers it keeps
    (tenants.selectors.caller_cached). At once, so that a reader in this transaction's
    process refills from the database; and again once the transaction commits, so that
    a reader that refilled meanwhile from the rows before the commit is dropped too.
    Saves and deletes of those models call it by themselves (tenants/apps.py); a
    queryset `.update()` of them must call it. Never skipped for a recent Redis failure
    (fail_fast=False): a revoked key must reach the replicas that still read Redis."""
    generations.bump(CALLERS, fail_fast=False)
    transaction.on_commit(lambda: generations.bump(CALLERS, fail_fast=False))


def _check_region(region: str, param: str = "data_region") -> str:
    try:
        return regions.normalise(region)
    except regions.RegionError as exc:
        raise TenantError(TenantErrorCode.INVALID, str(exc), param=param) from exc


def _check_jurisdiction(code: str) -> str:
    code = (code or "").strip().upper()
    if code and not (len(code) == 2 and code.isascii() and code.isalpha()):
        raise TenantError(
            TenantErrorCode.INVALID,
            f"not a country code: {code!r} (ISO 3166-1 alpha-2, e.g. DE, FR, NL)",
            param="jurisdiction",
        )
    return code


def tenant_create(
    *,
    name: str,
    tier: str = "free",
    plan: str | None = None,
    data_region: str = "",
    jurisdiction: str = "",
    actor: Actor = SYSTEM,
) -> Tenant:
    """Create a tenant. Its plan is `plan`, else the plan named like its tier if there is
    one; with no plan it is unlimited (a homelab's own tenant). With a `data_region` its
    requests only ever run on hives the operator placed in that region."""

    if not name or slugify(name) != name:
        raise TenantError(
            TenantErrorCode.INVALID,
            f"invalid tenant name {name!r}: use lowercase letters, digits, '-' and '_'",
        )
    data_region = _check_region(data_region)
    jurisdiction = _check_jurisdiction(jurisdiction)
    chosen = Plan.objects.filter(name=plan or tier).first()
    if plan and chosen is None:
        raise TenantError(TenantErrorCode.NOT_FOUND, f"no plan named {plan!r}")
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(
                name=name,
                tier=chosen.name if chosen else tier,
                plan=chosen,
                data_region=data_region,
                jurisdiction=jurisdiction,
            )
            audit.record(
                AuditAction.TENANT_CREATE,
                actor=actor,
                tenant_id=tenant.pk,
                data={"name": tenant.name, "tier": tenant.tier, "plan": _plan_name(tenant)},
            )
            return tenant
    except IntegrityError as exc:
        raise TenantError(
            TenantErrorCode.ALREADY_EXISTS, f"tenant {name!r} already exists"
        ) from exc


def _plan_name(tenant: Tenant) -> str | None:
    return tenant.plan.name if tenant.plan is not None else None


def _personal_of(user: Any) -> dict[str, str] | None:
    """A person's username, sealed under them: only when they are a data subject (an
    account without an e-mail has no key to seal it under, so it is left out)."""
    return {"username": user.get_username()} if user_subject(user) is not None else None


def _key_data(key: ApiKey) -> dict[str, Any]:
    """What the audit log keeps of a key: its prefix and scopes, never the key, its hash,
    or its free-text label (people write names there)."""
    return {
        "prefix": key.prefix,
        "scopes": key.scopes or {},
        "operator": bool((key.scopes or {}).get("operator")),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


def tenant_get_or_create(
    *, name: str, tier: str = "free", actor: Actor = SYSTEM
) -> tuple[Tenant, bool]:
    with transaction.atomic():
        tenant, created = Tenant.objects.get_or_create(name=name, defaults={"tier": tier})
        if created:
            audit.record(
                AuditAction.TENANT_CREATE,
                actor=actor,
                tenant_id=tenant.pk,
                data={"name": tenant.name, "tier": tenant.tier, "plan": None},
            )
        return tenant, created


SCOPE_ENDPOINTS = ("chat", "completions", "embeddings", "images", "audio", "videos")


def _check_scopes(scopes: dict[str, Any]) -> dict[str, Any]:
    """{"endpoints": [...], "models": [...], "operator": true}: the last one only from
    the queen's own CLI (`rbee key create --operator`): the portal refuses it."""
    out: dict[str, Any] = {}
    for field in ("endpoints", "models"):
        values = [str(v) for v in scopes.get(field) or [] if str(v)]
        if field == "endpoints":
            unknown = sorted(set(values) - set(SCOPE_ENDPOINTS))
            if unknown:
                raise TenantError(
                    TenantErrorCode.INVALID,
                    f"unknown endpoint scope {', '.join(unknown)}: use "
                    f"{', '.join(SCOPE_ENDPOINTS)}",
                )
        if values:
            out[field] = values
    if scopes.get("operator") is True:
        out["operator"] = True
    return out


def api_key_create(
    *,
    tenant: Tenant,
    name: str = "",
    scopes: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
    created_by: User | None = None,
    data_region: str = "",
    actor: Actor = SYSTEM,
    _action: AuditAction = AuditAction.KEY_CREATE,
    _extra: dict[str, Any] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext, which is never stored (nor
    audited: the event keeps the prefix). `created_by`: the person who made it (a portal
    user), for their GDPR export. Its
    `data_region` may narrow its tenant's (an "eu" tenant's "eu-west" key), never widen
    it: a region outside the tenant's is refused here, and should the tenant's region
    later change, routing honours both (kernel.regions.within_all) and so fails closed."""
    data_region = _check_region(data_region)
    if data_region and not regions.within(data_region, tenant.data_region):
        raise TenantError(
            TenantErrorCode.INVALID,
            f"a key's data region may only narrow its tenant's: {data_region!r} is not "
            f"within {tenant.data_region!r}",
            param="data_region",
        )
    new = secrets.make(ApiKey.KIND)
    with transaction.atomic():
        key = ApiKey.objects.create(
            tenant=tenant,
            name=name,
            prefix=new.prefix,
            key_hash=new.digest,
            scopes=_check_scopes(scopes or {}),
            expires_at=expires_at,
            created_by=created_by,
            data_region=data_region,
        )
        audit.record(
            _action,
            actor=actor,
            tenant_id=tenant.pk,
            data={**_key_data(key), **(_extra or {})},
        )
    return key, new.plaintext


def api_key_rotate(
    *, api_key: ApiKey, grace: timedelta = timedelta(hours=24), actor: Actor = SYSTEM
) -> tuple[ApiKey, str]:
    """A new key with the same name and scopes; the old one keeps working for `grace`
    (so clients can be switched over) and then expires."""
    if api_key.replaced_by_id is not None:
        raise TenantError(
            TenantErrorCode.ALREADY_ROTATED,
            "this key was already rotated: rotate its successor instead",
        )
    if api_key.revoked_at is not None:
        raise TenantError(TenantErrorCode.INVALID, "a revoked key cannot be rotated")
    with transaction.atomic():
        ends = timezone.now() + grace
        # One event, key.rotate, naming both keys (not a key.create besides).
        new, plaintext = api_key_create(
            tenant=api_key.tenant,
            name=api_key.name,
            scopes=api_key.scopes or {},
            data_region=api_key.data_region,
            created_by=api_key.created_by,
            actor=actor,
            _action=AuditAction.KEY_ROTATE,
            _extra={
                "replaces": api_key.prefix,
                "old_expires_at": min(ends, api_key.expires_at or ends).isoformat(),
            },
        )
        if api_key.expires_at is None or api_key.expires_at > ends:
            api_key.expires_at = ends
        api_key.replaced_by = new
        api_key.save(update_fields=["expires_at", "replaced_by"])
    return new, plaintext


def api_key_touch(*, api_key_id: int, every: timedelta = timedelta(seconds=60)) -> None:
    """Record that a key was used (at most once a minute per key: cheap on every request)."""
    now = timezone.now()
    ApiKey.objects.filter(pk=api_key_id).filter(
        models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=now - every)
    ).update(last_used_at=now)


def tenant_set_residency(
    *,
    tenant: Tenant,
    data_region: str | None = None,
    jurisdiction: str | None = None,
    actor: Actor = SYSTEM,
) -> Tenant:
    """Set where the tenant's requests may run and whose retention law applies (None:
    unchanged). Keys whose own region no longer lies within the new one keep it: routing
    requires both, so they fail closed rather than widen."""
    fields = []
    if data_region is not None:
        tenant.data_region = _check_region(data_region)
        fields.append("data_region")
    if jurisdiction is not None:
        tenant.jurisdiction = _check_jurisdiction(jurisdiction)
        fields.append("jurisdiction")
    if fields:
        with transaction.atomic():
            before = Tenant.objects.filter(pk=tenant.pk).values(*fields).first() or {}
            tenant.save(update_fields=fields)
            # Where a tenant's requests may run is a security setting: audited.
            audit.record(
                AuditAction.TENANT_RESIDENCY,
                actor=actor,
                tenant_id=tenant.pk,
                data={f: {"from": before.get(f), "to": getattr(tenant, f)} for f in fields},
            )
    return tenant


PROMPT_RETENTION_MODES = ("off", "consent", "contract")


def tenant_set_prompt_retention(
    *,
    tenant: Tenant,
    mode: str | None = None,
    days: int | None = None,
    actor: Actor = SYSTEM,
) -> Tenant:
    """Whether the tenant's prompts and responses may be kept, and how long: "off" (the
    default), "consent" (only for end users who consented to prompt_retention), or
    "contract" (every request, the tenant as controller deciding). 1-90 days."""
    fields = []
    if mode is not None:
        if mode not in PROMPT_RETENTION_MODES:
            raise TenantError(
                TenantErrorCode.INVALID,
                f"prompt retention is one of {', '.join(PROMPT_RETENTION_MODES)}, not {mode!r}",
                param="prompt_retention",
            )
        tenant.prompt_retention = mode
        fields.append("prompt_retention")
    if days is not None:
        if not 1 <= days <= 90:
            raise TenantError(
                TenantErrorCode.INVALID,
                "prompts are kept 1 to 90 days",
                param="prompt_retention_days",
            )
        tenant.prompt_retention_days = days
        fields.append("prompt_retention_days")
    if fields:
        with transaction.atomic():
            before = Tenant.objects.filter(pk=tenant.pk).values(*fields).first() or {}
            tenant.save(update_fields=fields)
            # A retention setting: audited (the audit audits itself).
            audit.record(
                AuditAction.TENANT_PROMPT_RETENTION,
                actor=actor,
                tenant_id=tenant.pk,
                data={f: {"from": before.get(f), "to": getattr(tenant, f)} for f in fields},
            )
    return tenant


_STATUS_ACTIONS = {
    Tenant.Status.SUSPENDED: AuditAction.TENANT_SUSPEND,
    Tenant.Status.ACTIVE: AuditAction.TENANT_REACTIVATE,
    Tenant.Status.PAST_DUE: AuditAction.TENANT_PAST_DUE,
}


def tenant_status_audit(
    *, tenant: Tenant, before: str, actor: Actor, data: dict[str, Any] | None = None
) -> None:
    """The event of a tenant's status change (none when it did not change): called in
    the transaction that saved it (here, and by billing for Stripe-driven changes)."""
    if tenant.status == before:
        return
    audit.record(
        _STATUS_ACTIONS[Tenant.Status(tenant.status)],
        actor=actor,
        tenant_id=tenant.pk,
        data={"from": before, "to": tenant.status, **(data or {})},
    )


def tenant_set_status(*, tenant: Tenant, status: str, actor: Actor = SYSTEM) -> Tenant:
    """Suspend (its keys stop working at once) or reactivate a tenant."""
    if status not in Tenant.Status.values:
        raise TenantError(TenantErrorCode.INVALID, f"unknown status {status!r}")
    with transaction.atomic():
        before = (
            Tenant.objects.select_for_update().values_list("status", flat=True).get(pk=tenant.pk)
        )
        tenant.status = status
        if status == Tenant.Status.ACTIVE:
            tenant.past_due_since = None
        tenant.save(update_fields=["status", "past_due_since"])
        tenant_status_audit(tenant=tenant, before=before, actor=actor)
    return tenant


def tenant_set_billing_email(*, tenant: Tenant, email: str, actor: Actor = SYSTEM) -> Tenant:
    """Where the tenant's invoices go ("" for nowhere). When it is a person's address,
    that person is the invoices' customer for GDPR (tenants/gdpr.py, billing/gdpr.py)."""
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    email = email.strip()
    if email:
        try:
            validate_email(email)
        except ValidationError as exc:
            raise TenantError(
                TenantErrorCode.INVALID, f"not an e-mail address: {email!r}", param="email"
            ) from exc
    try:
        subject = subjects.user(email) if email else None
    except subjects.SubjectError:
        subject = None
    with transaction.atomic():
        tenant.billing_email = email
        tenant.save(update_fields=["billing_email"])
        audit.record(
            AuditAction.TENANT_BILLING_EMAIL,
            actor=actor,
            tenant_id=tenant.pk,
            subject=subject,
            data={"set": bool(email)},
        )
    return tenant


def tenant_set_plan(*, tenant: Tenant, plan_name: str, actor: Actor = SYSTEM) -> Tenant:

    plan = Plan.objects.filter(name=plan_name).first()
    if plan is None:
        # A value in the request, not an object it addresses: invalid, not "not found".
        raise TenantError(TenantErrorCode.INVALID, f"no plan named {plan_name!r}", param="plan")
    with transaction.atomic():
        before = _plan_name(tenant)
        tenant.plan = plan
        tenant.tier = plan.name
        tenant.save(update_fields=["plan", "tier"])
        audit.record(
            AuditAction.TENANT_PLAN,
            actor=actor,
            tenant_id=tenant.pk,
            data={"from": before, "to": plan.name},
        )
    return tenant


def tenant_set_overrides(
    *, tenant: Tenant, overrides: dict[str, int | None], actor: Actor = SYSTEM
) -> Tenant:
    """Replace single limits of the tenant's plan (None: unlimited; a missing key: the
    plan's)."""

    unknown = sorted(set(overrides) - set(Plan.LIMIT_FIELDS))
    if unknown:
        raise TenantError(
            TenantErrorCode.INVALID,
            f"unknown limit {', '.join(unknown)}: use {', '.join(Plan.LIMIT_FIELDS)}",
        )
    with transaction.atomic():
        merged = {**(tenant.overrides or {}), **overrides}
        tenant.overrides = merged
        tenant.save(update_fields=["overrides"])
        audit.record(
            AuditAction.TENANT_OVERRIDES,
            actor=actor,
            tenant_id=tenant.pk,
            data={"set": dict(overrides), "overrides": merged},
        )
    return tenant


def api_key_revoke(*, api_key: ApiKey, actor: Actor = SYSTEM) -> ApiKey:
    """Revoke a key (once: revoking a revoked key changes and records nothing)."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            callers_changed()
            audit.record(
                AuditAction.KEY_REVOKE,
                actor=actor,
                tenant_id=api_key.tenant_id,
                data=_key_data(api_key),
            )
    api_key.refresh_from_db()
    return api_key


# Members and invitations ---------------------------------------------------------------

_ROLES = tuple(Membership.Role.values)


def _check_role(role: str) -> str:
    if role not in _ROLES:
        raise TenantError(
            TenantErrorCode.INVALID, f"unknown role {role!r}: use {', '.join(_ROLES)}"
        )
    return role


def _lock_tenant(tenant_id: int) -> None:
    """Serialize membership changes of one tenant (the last-owner rule reads, then writes)."""
    Tenant.objects.select_for_update().filter(pk=tenant_id).values_list("pk").first()


def _member_audit(
    action: AuditAction, membership: Membership, user: Any, actor: Actor, **data: Any
) -> None:
    """A membership event: about the member (a data subject); their e-mail only sealed."""
    audit.record(
        action,
        actor=actor,
        tenant_id=membership.tenant_id,
        subject=user_subject(user),
        personal=_personal_of(user),
        data={"membership_id": membership.pk, "user_id": user.pk, **data},
    )


def membership_add(
    *, tenant: Tenant, user: User, role: str, actor: Actor = SYSTEM, invitation_id: int = 0
) -> Membership:
    _check_role(role)
    try:
        with transaction.atomic():
            m = Membership.objects.create(tenant=tenant, user=user, role=role)
            extra = {"invitation_id": invitation_id} if invitation_id else {}
            _member_audit(AuditAction.MEMBER_ADD, m, user, actor, role=role, **extra)
            return m
    except IntegrityError as exc:
        raise TenantError(
            TenantErrorCode.ALREADY_EXISTS, f"{user.get_username()} is already a member"
        ) from exc


def _would_orphan(membership: Membership) -> bool:
    """True when `membership` is the tenant's only owner."""
    if membership.role != Membership.Role.OWNER:
        return False
    owners = Membership.objects.filter(tenant_id=membership.tenant_id, role=Membership.Role.OWNER)
    return not owners.exclude(pk=membership.pk).exists()


def membership_set_role(*, membership: Membership, role: str, actor: Actor = SYSTEM) -> Membership:
    """Change a member's role; the tenant's last owner stays an owner."""
    _check_role(role)
    with transaction.atomic():
        _lock_tenant(membership.tenant_id)
        membership.refresh_from_db()
        if role != Membership.Role.OWNER and _would_orphan(membership):
            raise TenantError(TenantErrorCode.INVALID, "a tenant must keep at least one owner")
        before = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        if before != role:
            _member_audit(
                AuditAction.MEMBER_ROLE,
                membership,
                membership.user,
                actor,
                **{"from": before, "to": role},
            )
    return membership


def membership_remove(*, membership: Membership, actor: Actor = SYSTEM) -> None:
    """Remove a member; the tenant's last owner cannot be removed."""
    with transaction.atomic():
        _lock_tenant(membership.tenant_id)
        membership.refresh_from_db()
        if _would_orphan(membership):
            raise TenantError(TenantErrorCode.INVALID, "a tenant must keep at least one owner")
        _member_audit(
            AuditAction.MEMBER_REMOVE, membership, membership.user, actor, role=membership.role
        )
        membership.delete()


def invitation_create(
    *,
    tenant: Tenant,
    email: str,
    role: str,
    invited_by: User | None,
    ttl: timedelta = timedelta(days=7),
    actor: Actor = SYSTEM,
) -> tuple[Invitation, str]:
    """An invitation for `email` to join `tenant` as `role`; returns the row and the
    one-time token (only its SHA-256 is stored)."""
    _check_role(role)
    email = email.strip()
    if not email or "@" not in email:
        raise TenantError(TenantErrorCode.INVALID, f"invalid email {email!r}")
    if ttl <= timedelta(0):
        raise TenantError(TenantErrorCode.INVALID, "an invitation must expire in the future")
    token = stdlib_secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            tenant=tenant,
            email=email,
            role=role,
            token_hash=secrets.digest(token),
            invited_by=invited_by,
            expires_at=timezone.now() + ttl,
        )
        _invitation_audit(AuditAction.INVITATION_CREATE, invitation, actor)
    return invitation, token


def _invitation_audit(action: AuditAction, invitation: Invitation, actor: Actor) -> None:
    """An invitation event: about the invitee (their e-mail is the subject, sealed);
    never the token."""
    try:
        subject = subjects.user(invitation.email)
    except subjects.SubjectError:
        subject = None
    audit.record(
        action,
        actor=actor,
        tenant_id=invitation.tenant_id,
        subject=subject,
        data={
            "invitation_id": invitation.pk,
            "role": invitation.role,
            "expires_at": invitation.expires_at.isoformat(),
        },
    )


_DUMMY_INVITATION_DIGEST = secrets.digest("no-such-invitation")


def _open_invitation(token: str) -> Invitation:
    """The invitation of `token`, locked until the transaction ends, if it may still be
    accepted (not used, not expired); else the error that says why."""
    digest = secrets.digest(token or "")
    invitation = (
        Invitation.objects.select_for_update().filter(token_hash=digest).first() if token else None
    )
    if invitation is None or not stdlib_hmac.compare_digest(digest, invitation.token_hash):
        stdlib_hmac.compare_digest(digest, _DUMMY_INVITATION_DIGEST)
        raise TenantError(TenantErrorCode.NOT_FOUND, "unknown invitation")
    if invitation.accepted_at is not None:
        raise TenantError(TenantErrorCode.INVALID, "this invitation was already used")
    if invitation.expires_at <= timezone.now():
        raise TenantError(TenantErrorCode.INVALID, "this invitation has expired")
    return invitation


def invitation_accept(*, token: str, user: User, actor: Actor | None = None) -> Membership:
    """Join the invitation's tenant with its role, once, before it expires, as the user
    whose email it was sent to (compared case-insensitively)."""
    with transaction.atomic():
        invitation = _open_invitation(token)
        if not user.email or user.email.strip().casefold() != invitation.email.casefold():
            raise TenantError(
                TenantErrorCode.INVALID, "this invitation was sent to another email address"
            )
        used = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).update(
            accepted_at=timezone.now()
        )
        if used != 1:  # accepted concurrently
            raise TenantError(TenantErrorCode.INVALID, "this invitation was already used")
        who = actor if actor is not None else (user_subject(user) or f"user#{user.pk}")
        _invitation_audit(AuditAction.INVITATION_ACCEPT, invitation, who)
        return membership_add(
            tenant=invitation.tenant,
            user=user,
            role=invitation.role,
            actor=who,
            invitation_id=invitation.pk,
        )


def _lock_email(email: str) -> None:
    """Until the transaction ends, one account creation per e-mail (case-insensitive) at
    a time: a PostgreSQL advisory lock on a hash of it (SQLite has one writer anyway)."""
    if connection.vendor != "postgresql":
        return
    key = int.from_bytes(
        hashlib.sha256(b"rbee:account-email:" + email.casefold().encode()).digest()[:8],
        "big",
        signed=True,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def invitation_accept_new_account(*, token: str, password: str) -> Membership:
    """A person without an account accepts an invitation: an account with the invited
    e-mail and `password` is made and joins the tenant, in one transaction (a used,
    expired or unknown invitation makes no account). An e-mail that already has an
    account must sign in and accept instead."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    with transaction.atomic():
        # Lock first, check after: two acceptances of this invitation at once take
        # turns here (the second then finds it used), and two of different invitations
        # to one e-mail take turns on the e-mail's lock, so neither makes a second
        # account with that e-mail nor fails on the username's unique index.
        invitation = _open_invitation(token)
        email = invitation.email.strip()
        _lock_email(email)
        if User.objects.filter(email__iexact=email).exists():
            raise TenantError(
                TenantErrorCode.ALREADY_EXISTS,
                "an account with this e-mail exists: sign in to accept the invitation",
            )
        username = email.lower()
        if len(username) > 150 or User.objects.filter(username=username).exists():
            username = f"user-{stdlib_secrets.token_hex(8)}"
        user = User.objects.create_user(username, email, password)
        return invitation_accept(token=token, user=user)


def invitation_cancel(*, invitation: Invitation, actor: Actor = SYSTEM) -> None:
    """Withdraw an invitation that has not been accepted."""
    with transaction.atomic():
        deleted, _ = Invitation.objects.filter(pk=invitation.pk, accepted_at__isnull=True).delete()
        if deleted:
            _invitation_audit(AuditAction.INVITATION_WITHDRAW, invitation, actor)
    if not deleted:
        raise TenantError(TenantErrorCode.INVALID, "this invitation was already used")


def plan_set(
    *,
    name: str,
    limits: dict[str, int | None],
    allowed_models: list[str] | None = None,
    queue_weight: int | None = None,
    max_priority: str | None = None,
    actor: Actor = SYSTEM,
) -> tuple[Plan, bool]:
    """Create the plan `name` or change it: each of `limits` (a Plan.LIMIT_FIELDS name ->
    N, or None for unlimited) is set, the others are left as they are; `allowed_models`
    replaces the plan's models when given ([]: every model); `queue_weight` (1-100, its
    share of a busy model's queue) and `max_priority` ("interactive" or "batch") when given.
    Returns (plan, created)."""
    unknown = sorted(set(limits) - set(Plan.LIMIT_FIELDS))
    if unknown:
        raise TenantError(
            TenantErrorCode.INVALID,
            f"unknown limit {', '.join(unknown)}: use {', '.join(Plan.LIMIT_FIELDS)}",
        )
    if queue_weight is not None and not 1 <= queue_weight <= 100:
        raise TenantError(TenantErrorCode.INVALID, "queue_weight must be from 1 to 100")
    if max_priority is not None and max_priority not in ("interactive", "batch"):
        raise TenantError(TenantErrorCode.INVALID, "max_priority must be 'interactive' or 'batch'")
    with transaction.atomic():
        plan, created = Plan.objects.select_for_update().get_or_create(name=name)
        for field, value in limits.items():
            setattr(plan, field, value)
        if allowed_models is not None:
            plan.allowed_models = [m.strip() for m in allowed_models if m.strip()]
        if queue_weight is not None:
            plan.queue_weight = queue_weight
        if max_priority is not None:
            plan.max_priority = max_priority
        plan.save()
        plan_audit(plan=plan, created=created, actor=actor)
    return plan, created


def plan_audit(*, plan: Plan, created: bool, actor: Actor) -> None:
    """The plan.set event: the plan's whole state after the change (so the log alone
    says what any plan allowed at any time). Called in the saving transaction."""
    audit.record(
        AuditAction.PLAN_SET,
        actor=actor,
        data={
            "plan": plan.name,
            "created": created,
            "limits": {f: getattr(plan, f) for f in Plan.LIMIT_FIELDS},
            "allowed_models": list(plan.allowed_models or []),
            "queue_weight": plan.queue_weight,
            "max_priority": plan.max_priority,
            "stripe_price_id": plan.stripe_price_id,
        },
    )


# Operators --------------------------------------------------------------------------------


def _operator_permissions(areas: list[str]) -> list[Any]:
    from django.contrib.auth.models import Permission

    unknown = sorted(set(areas) - set(OPERATOR_AREAS))
    if unknown:
        raise TenantError(
            TenantErrorCode.INVALID,
            f"unknown operator permission {', '.join(unknown)}: use {', '.join(OPERATOR_AREAS)}",
        )
    codenames = [OPERATOR_AREAS[a].partition(".")[2] for a in areas]
    return list(
        Permission.objects.filter(content_type__app_label="tenants", codename__in=codenames)
    )


def _operator(username: str) -> User:
    from django.contrib.auth.models import User

    user = User.objects.filter(username=username).first()
    if user is None:
        raise TenantError(TenantErrorCode.NOT_FOUND, f"no user named {username!r}")
    return user


def operator_create(
    *,
    username: str,
    password: str,
    areas: list[str],
    email: str = "",
    superuser: bool = False,
    actor: Actor = SYSTEM,
) -> User:
    """A staff user holding the operators' permissions of `areas` (a superuser holds
    every one). Staff without permissions may sign in to the admin and nothing more."""
    from django.contrib.auth.models import User

    if not username.strip():
        raise TenantError(TenantErrorCode.INVALID, "an operator needs a name")
    if not password:
        raise TenantError(TenantErrorCode.INVALID, "an operator needs a password")
    perms = _operator_permissions(areas)
    if User.objects.filter(username=username).exists():
        raise TenantError(TenantErrorCode.ALREADY_EXISTS, f"user {username!r} already exists")
    with transaction.atomic():
        if superuser:
            user = User.objects.create_superuser(username, email, password)
        else:
            user = User.objects.create_user(username, email, password, is_staff=True)
        user.user_permissions.add(*perms)
        _operator_audit(
            AuditAction.OPERATOR_CREATE, user, actor, areas=sorted(areas), superuser=superuser
        )
    return user


def _operator_audit(action: AuditAction, user: Any, actor: Actor, **data: Any) -> None:
    """An operator event: about that person; their username only sealed."""
    audit.record(
        action,
        actor=actor,
        subject=user_subject(user),
        personal=_personal_of(user),
        data={"user_id": user.pk, **data},
    )


def operator_grant(*, username: str, areas: list[str], actor: Actor = SYSTEM) -> User:
    """Give an existing user the operators' permissions of `areas` (and staff status)."""
    perms = _operator_permissions(areas)
    user = _operator(username)
    with transaction.atomic():
        if not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        user.user_permissions.add(*perms)
        _operator_audit(AuditAction.OPERATOR_GRANT, user, actor, areas=sorted(areas))
    return user


def operator_revoke(*, username: str, areas: list[str], actor: Actor = SYSTEM) -> User:
    """Take the operators' permissions of `areas` away (a superuser keeps them all)."""
    perms = _operator_permissions(areas)
    user = _operator(username)
    with transaction.atomic():
        user.user_permissions.remove(*perms)
        _operator_audit(AuditAction.OPERATOR_REVOKE, user, actor, areas=sorted(areas))
    return user
