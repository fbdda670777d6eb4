"""Tenant scoping for every portal page: the tenant in the URL (/portal/t/<name>/...) is
fetched only through the signed-in user's membership of it, so another tenant's pages
(and ids) answer the same 404 as ones that do not exist. Roles as the API has them:
owners and admins manage keys and members; `billing` sees usage and invoices but not
keys; `member` uses keys and sees usage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.cache import never_cache

from tenants.models import Membership, Tenant

PORTAL_LOGIN = "/portal/login"
ROLES_KEYS = ("owner", "admin", "member")  # who sees keys (billing does not)
ROLES_MANAGE = ("owner", "admin")  # who creates, rotates and revokes keys; manages members
ROLES_BILLING = ("owner", "admin", "billing")  # who sees invoices and the plan's billing
ROLES_ALL = ("owner", "admin", "member", "billing")


@dataclass(frozen=True)
class Member:
    """The signed-in user's standing in the tenant of this page."""

    tenant: Tenant
    membership: Membership
    role: str

    def can(self, *roles: str) -> bool:
        return self.role in roles


def member_of(user: Any, tenant_name: str) -> Member:
    """The user's membership of `tenant_name`, or 404 (not a member, or no such tenant)."""
    membership = (
        Membership.objects.select_related("tenant__plan")
        .filter(tenant__name=tenant_name, user=user)
        .first()
        if getattr(user, "is_authenticated", False)
        else None
    )
    if membership is None:
        raise Http404("no such tenant")
    return Member(tenant=membership.tenant, membership=membership, role=membership.role)


def member_page(
    *roles: str,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A portal page of the tenant named by the URL's `tenant` argument. Signed out: to
    the login page and back. Not a member: 404. A member whose role is not in `roles`
    (default: every role): 404 too, so a billing member cannot learn that keys exist."""
    allowed = roles or ROLES_ALL

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, tenant: str, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                query = urlencode({"next": request.get_full_path()})
                return HttpResponseRedirect(f"{PORTAL_LOGIN}?{query}")
            member = member_of(request.user, tenant)
            if member.role not in allowed:
                raise Http404("no such page")
            request.member = member  # type: ignore[attr-defined]
            return view(request, member, *args, **kwargs)

        return never_cache(wrapped)

    return decorate


def memberships(user: Any) -> list[Membership]:
    """Every tenant the user belongs to, for the tenant switcher."""
    return list(
        Membership.objects.select_related("tenant").filter(user=user).order_by("tenant__name")
    )
