"""What gdpr needs to know of tenants' people (gdpr.access): registered in ready()."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gdpr import subjects
from gdpr.access import Principal
from gdpr.providers import Erased, Provider, register
from tenants.auth import API_AUTHENTICATION
from tenants.models import Membership
from tenants.permissions import may_operate


class TenantsAccess:
    def authentication_classes(self) -> Sequence[type[Any]]:
        return API_AUTHENTICATION

    def principal(self, user: Any) -> Principal | None:
        if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
            return None
        email = (user.email or "").strip().lower()
        operator = may_operate(user, "audit")
        try:
            subject = subjects.user(email)
        except subjects.SubjectError:
            if not operator:
                return None  # an account without an e-mail is nobody's data subject here
            # An operator without an e-mail still acts for others (and has no "self").
            subject = subjects.Subject(subjects.USER, email="")
        rows = Membership.objects.filter(user=user).values_list("tenant_id", "tenant__name", "role")
        member = {tid: name for tid, name, _ in rows}
        admin = {
            tid: name
            for tid, name, role in rows
            if role in (Membership.Role.OWNER, Membership.Role.ADMIN)
        }
        return Principal(
            user_id=user.pk,
            subject=subject,
            operator=operator,
            member_of=member,
            admin_of=admin,
        )


# --- export and erasure providers (gdpr.providers) ----------------------------------------
#
# A person with an account is `user:<e-mail>`. What tenants holds about them: the account
# (auth.User: username, e-mail, names, dates, operator permissions), their memberships,
# invitations sent to their e-mail, the API keys they created (a key belongs to its
# tenant; `created_by`, its label and dates are the creator's data), tenants billed to
# their e-mail, and the admin's change log about them. End users (`enduser:T:U`) are
# unknown to tenants: they exist only in usage and audit records.

RETENTION_ACCOUNT = "while the account exists; erased on request (Art. 17)"


def _user(subject: subjects.Subject) -> Any:
    from django.contrib.auth import get_user_model

    if subject.kind != subjects.USER:
        return None
    return get_user_model().objects.filter(email__iexact=subject.email).order_by("pk").first()


def _users(subject: subjects.Subject) -> list[Any]:
    from django.contrib.auth import get_user_model

    if subject.kind != subjects.USER:
        return []
    return list(get_user_model().objects.filter(email__iexact=subject.email).order_by("pk"))


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def account_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    from tenants.selectors import operator_areas

    return [
        {
            "username": u.username,
            "email": u.email,
            "first_name": u.first_name,
            "last_name": u.last_name,
            "date_joined": _iso(u.date_joined),
            "last_login": _iso(u.last_login),
            "is_active": u.is_active,
            "operator_areas": operator_areas(user=u),
        }
        for u in _users(subject)
    ]


def account_aliases(subject: subjects.Subject) -> list[str]:
    out: list[str] = []
    for u in _users(subject):
        out.append(u.username)
        full = f"{u.first_name} {u.last_name}".strip()
        if " " in full:
            out.append(full)
    return out


def account_erase(subject: subjects.Subject) -> Erased:
    """Delete the account: its sessions, the admin's log entries about it, and the row
    itself (its memberships, permissions and its own admin log entries go with it)."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType
    from django.contrib.sessions.models import Session
    from django.db import transaction
    from django.utils import timezone

    out = Erased(store="tenants.account")
    users = _users(subject)
    if not users:
        return out
    with transaction.atomic():
        for u in users:
            ct = ContentType.objects.get_for_model(type(u))
            out.deleted += LogEntry.objects.filter(content_type=ct, object_id=str(u.pk)).delete()[0]
            for s in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
                if str(s.get_decoded().get("_auth_user_id")) == str(u.pk):
                    s.delete()
                    out.deleted += 1
            out.deleted += u.delete()[0]
    return out


def memberships_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    return [
        {"tenant": m.tenant.name, "role": m.role, "since": _iso(m.created_at)}
        for m in Membership.objects.filter(user__in=_users(subject)).select_related("tenant")
    ]


def memberships_erase(subject: subjects.Subject) -> Erased:
    """Memberships go with the account (tenants.account); a tenant left without an
    owner is named in the receipt, so an operator can hand it over."""
    out = Erased(store="tenants.memberships")
    rows = Membership.objects.filter(user__in=_users(subject)).select_related("tenant")
    for m in rows:
        if m.role == Membership.Role.OWNER and not (
            Membership.objects.filter(tenant_id=m.tenant_id, role=Membership.Role.OWNER)
            .exclude(user_id=m.user_id)
            .exists()
        ):
            out.notes.append(f"tenant {m.tenant.name} has no owner left")
    out.deleted = rows.delete()[0]
    return out


def invitations_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    from tenants.models import Invitation

    if subject.kind != subjects.USER:
        return []
    return [
        {
            "tenant": i.tenant.name,
            "email": i.email,
            "role": i.role,
            "invited_by": i.invited_by.username if i.invited_by else None,
            "created_at": _iso(i.created_at),
            "expires_at": _iso(i.expires_at),
            "accepted_at": _iso(i.accepted_at),
        }
        for i in Invitation.objects.filter(email__iexact=subject.email).select_related(
            "tenant", "invited_by"
        )
    ]


def invitations_erase(subject: subjects.Subject) -> Erased:
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType
    from django.db import transaction

    from tenants.models import Invitation

    out = Erased(store="tenants.invitations")
    if subject.kind == subjects.USER:
        with transaction.atomic():
            mine = Invitation.objects.filter(email__iexact=subject.email)
            ids = [str(pk) for pk in mine.values_list("pk", flat=True)]
            # The admin's change log names an invitation by its e-mail (object_repr).
            ct = ContentType.objects.get_for_model(Invitation)
            out.deleted += LogEntry.objects.filter(content_type=ct, object_id__in=ids).delete()[0]
            out.deleted += mine.delete()[0]
    return out


def keys_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    from tenants.models import ApiKey

    return [
        {
            "tenant": k.tenant.name,
            "key": k.display,
            "name": k.name,
            "created_at": _iso(k.created_at),
            "last_used_at": _iso(k.last_used_at),
            "expires_at": _iso(k.expires_at),
            "revoked_at": _iso(k.revoked_at),
        }
        for k in ApiKey.objects.filter(created_by__in=_users(subject)).select_related("tenant")
    ]


def keys_erase(subject: subjects.Subject) -> Erased:
    """The keys stay the tenant's and keep working; they no longer say who made them,
    and their labels (free text their creator wrote) are cleared."""
    from tenants.models import ApiKey

    out = Erased(store="tenants.api_keys")
    out.pseudonymised = ApiKey.objects.filter(created_by__in=_users(subject)).update(
        created_by=None, name=""
    )
    return out


def billing_contact_export(subject: subjects.Subject) -> list[dict[str, Any]]:
    from tenants.models import Tenant

    if subject.kind != subjects.USER:
        return []
    return [
        {"tenant": t.name, "billing_email": t.billing_email}
        for t in Tenant.objects.filter(billing_email__iexact=subject.email)
    ]


def billing_contact_erase(subject: subjects.Subject) -> Erased:
    from tenants.models import Tenant

    out = Erased(store="tenants.billing_contact")
    if subject.kind == subjects.USER:
        out.deleted = Tenant.objects.filter(billing_email__iexact=subject.email).update(
            billing_email=""
        )
    return out


def tenant_id_of(name: str) -> int | None:
    """A tenant's id by its name, for gdpr's legal-hold check on a tenant's end user."""
    from tenants.models import Tenant

    return Tenant.objects.filter(name=name).values_list("pk", flat=True).first()


def register_providers() -> None:
    purposes_account = (
        "providing the account and the portal (contract, Art. 6(1)(b))",
        "security: sign-in, lockout, operators' permissions (Art. 6(1)(f))",
    )
    for p in (
        Provider(
            name="tenants.account",
            title="Account",
            categories=("account holder: username, e-mail, names", "sign-in dates"),
            purposes=purposes_account,
            retention=RETENTION_ACCOUNT,
            export=account_export,
            erase=account_erase,
            aliases=account_aliases,
            phase=80,  # after the stores that find the subject through the account row
        ),
        Provider(
            name="tenants.memberships",
            title="Tenant memberships and roles",
            categories=("account holder: tenants and roles",),
            purposes=purposes_account,
            retention=RETENTION_ACCOUNT,
            export=memberships_export,
            erase=memberships_erase,
        ),
        Provider(
            name="tenants.invitations",
            title="Invitations",
            categories=("invitee: e-mail, tenant and role offered",),
            purposes=("inviting people to a tenant (Art. 6(1)(b) and (f))",),
            retention="until accepted, cancelled or erased; expired ones until erased",
            export=invitations_export,
            erase=invitations_erase,
        ),
        Provider(
            name="tenants.api_keys",
            title="API keys you created",
            categories=("account holder: keys created, their labels and dates",),
            purposes=("accountability for a tenant's keys (Art. 6(1)(f))",),
            retention="while the key exists; the link to you is removed on erasure",
            export=keys_export,
            erase=keys_erase,
        ),
        Provider(
            name="tenants.billing_contact",
            title="Billing contact",
            categories=("account holder: billing e-mail",),
            purposes=("invoicing (contract, Art. 6(1)(b))",),
            retention="while the tenant exists; cleared on erasure",
            export=billing_contact_export,
            erase=billing_contact_erase,
        ),
    ):
        register(p)
