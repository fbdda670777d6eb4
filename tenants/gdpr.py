"""What gdpr needs to know of tenants' people (gdpr.access): registered in ready()."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gdpr import subjects
from gdpr.access import Principal
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
        try:
            subject = subjects.user(email)
        except subjects.SubjectError:
            return None  # an account without an e-mail is nobody's data subject here
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
            operator=may_operate(user, "audit"),
            member_of=member,
            admin_of=admin,
        )
