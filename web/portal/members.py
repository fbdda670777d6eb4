"""/portal/t/<tenant>/members: members and roles, invitations. Every member sees the
members; owners and admins invite, change roles and remove; only owners grant, change or
take away the owner role; anyone may leave; the last owner can neither leave nor be
demoted (tenants.services). A member without the role gets 403, an id of another tenant
(or none) 404, as the API answers."""

from __future__ import annotations

import logging
import smtplib
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.core.mail import send_mail
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from tenants.actors import user_actor
from tenants.errors import TenantError
from tenants.models import Invitation, Membership
from tenants.selectors import invitation_list, invitation_of, membership_list, membership_of
from tenants.services import (
    invitation_cancel,
    invitation_create,
    membership_remove,
    membership_set_role,
)
from web.links import NO_PUBLIC_URL, public_origin
from web.portal.access import ROLES_MANAGE, Member, member_page
from web.portal.common import check_id, forbidden, page, sentence

log = logging.getLogger(__name__)
Role = Membership.Role
ROLE_CHOICES = [(r.value, r.label) for r in Role]
TTL_CHOICES = [("1", "1 day"), ("7", "7 days"), ("30", "30 days")]
MAY_NOT_MANAGE = "Only the tenant's owners and admins manage its members and invitations."
OWNER_ONLY = "Only an owner may grant, change or remove the owner role."


class InviteForm(forms.Form):
    email = forms.EmailField(label="E-mail", max_length=254)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Role.MEMBER, label="Role")
    ttl_days = forms.TypedChoiceField(
        choices=TTL_CHOICES, coerce=int, initial="7", label="Link valid for"
    )


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES, label="Role")


def invitation_state(invitation: Invitation) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.expires_at <= timezone.now():
        return "expired"
    return "pending"


def _members_page(
    request: HttpRequest,
    member: Member,
    *,
    form: InviteForm | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    manage = member.can(*ROLES_MANAGE)
    invitations: list[dict[str, Any]] = []
    if manage:
        invitations = [
            {"row": i, "state": invitation_state(i)} for i in invitation_list(tenant=member.tenant)
        ]
    roles = ROLE_CHOICES if member.can(Role.OWNER) else [c for c in ROLE_CHOICES if c[0] != "owner"]
    rows = list(membership_list(tenant=member.tenant))
    owners = sum(1 for m in rows if m.role == Role.OWNER)
    return page(
        request,
        member,
        "portal/members.html",
        section="members",
        title=f"{member.tenant.name} · Members",
        status=status,
        rows=rows,
        sole_owner=member.role == Role.OWNER and owners == 1,
        invitations=invitations,
        manage=manage,
        is_owner=member.can(Role.OWNER),
        role_choices=roles,
        form=form or InviteForm(),
        error=error,
    )


@member_page()
@require_GET
def members_page(request: HttpRequest, member: Member) -> HttpResponse:
    return _members_page(request, member)


def _back(member: Member) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"/portal/t/{member.tenant.name}/members")


def send_invitation(
    request: HttpRequest, invitation: Invitation, token: str, *, origin: str
) -> None:
    """The invitation e-mail: the one-time link (on `origin`, web/links.py), the tenant,
    the role, who sent it."""
    link = f"{origin}/portal/invitations/{token}"
    context = {"invitation": invitation, "link": link, "inviter": request.user}
    send_mail(
        subject=f"You are invited to {invitation.tenant.name} on rbee",
        message=render_to_string("portal/email/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )


@member_page()
@require_POST
def member_invite(request: HttpRequest, member: Member) -> HttpResponse:
    """POST: invite an e-mail with a role (the same answer whether it has an account)."""
    if not member.can(*ROLES_MANAGE):
        return forbidden(request, member, MAY_NOT_MANAGE)
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _members_page(request, member, form=form, status=400)
    role = form.cleaned_data["role"]
    if role == Role.OWNER and not member.can(Role.OWNER):
        return forbidden(request, member, OWNER_ONLY)
    origin = public_origin(request)
    if origin is None:  # no invitation whose link could not be sent
        return _members_page(request, member, form=form, error=NO_PUBLIC_URL, status=503)
    try:
        invitation, token = invitation_create(
            tenant=member.tenant,
            email=form.cleaned_data["email"],
            role=role,
            invited_by=request.user,  # type: ignore[arg-type]
            ttl=timedelta(days=form.cleaned_data["ttl_days"]),
            actor=user_actor(request.user),
        )
    except TenantError as exc:
        form.add_error(None, exc.message)
        return _members_page(request, member, form=form, status=400)
    try:
        send_invitation(request, invitation, token, origin=origin)
    except (OSError, smtplib.SMTPException):
        log.exception("the invitation e-mail could not be sent")
        return _members_page(
            request,
            member,
            error="The invitation was made but its e-mail could not be sent. Withdraw it and "
            "try again later.",
            status=502,
        )
    messages.success(
        request, f"Invitation sent to {invitation.email} ({invitation.role}); the link is valid "
        f"until {invitation.expires_at:%Y-%m-%d %H:%M} UTC."
    )  # fmt: skip
    return _back(member)


def _membership(member: Member, membership_id: int) -> Membership:
    m = membership_of(tenant=member.tenant, membership_id=check_id(membership_id))
    if m is None:
        raise Http404("no such member")
    return m


@member_page()
@require_POST
def member_role(request: HttpRequest, member: Member, membership_id: int) -> HttpResponse:
    """POST: change a member's role (owners and admins; the owner role: owners only)."""
    if not member.can(*ROLES_MANAGE):
        return forbidden(request, member, MAY_NOT_MANAGE)
    target = _membership(member, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _members_page(request, member, error="Choose one of the roles.", status=400)
    role = form.cleaned_data["role"]
    if Role.OWNER in (target.role, role) and not member.can(Role.OWNER):
        return forbidden(request, member, OWNER_ONLY)
    try:
        membership_set_role(membership=target, role=role, actor=user_actor(request.user))
    except TenantError as exc:
        return _members_page(request, member, error=sentence(exc.message), status=400)
    messages.success(request, f"{target.user.email or target.user.username} is now {role}.")
    return _back(member)


@member_page()
@require_POST
def member_remove(request: HttpRequest, member: Member, membership_id: int) -> HttpResponse:
    """POST: remove a member (owners and admins), or leave (anyone, for themself)."""
    own = member.membership.pk == membership_id
    if not own and not member.can(*ROLES_MANAGE):
        return forbidden(request, member, MAY_NOT_MANAGE)
    target = _membership(member, membership_id)
    if not own and target.role == Role.OWNER and not member.can(Role.OWNER):
        return forbidden(request, member, OWNER_ONLY)
    try:
        membership_remove(membership=target, actor=user_actor(request.user))
    except TenantError as exc:
        return _members_page(request, member, error=sentence(exc.message), status=400)
    if own:
        messages.success(request, f"You left {member.tenant.name}.")
        return HttpResponseRedirect("/portal/")
    messages.success(request, f"{target.user.email or target.user.username} was removed.")
    return _back(member)


@member_page()
@require_POST
def invitation_withdraw(request: HttpRequest, member: Member, invitation_id: int) -> HttpResponse:
    if not member.can(*ROLES_MANAGE):
        return forbidden(request, member, MAY_NOT_MANAGE)
    invitation = invitation_of(tenant=member.tenant, invitation_id=check_id(invitation_id))
    if invitation is None:
        raise Http404("no such invitation")
    if invitation.role == Role.OWNER and not member.can(Role.OWNER):
        return forbidden(request, member, OWNER_ONLY)
    try:
        invitation_cancel(invitation=invitation, actor=user_actor(request.user))
    except TenantError as exc:
        return _members_page(request, member, error=sentence(exc.message), status=400)
    messages.success(request, f"The invitation to {invitation.email} was withdrawn.")
    return _back(member)
