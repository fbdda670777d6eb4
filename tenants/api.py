"""The tenant portal's management API (DRF), for the people behind each tenant.

    GET    /api/tenants                                   the tenants I belong to (staff: all)
    GET    /api/tenants/<id>                              name, plan, effective limits, status
    PATCH  /api/tenants/<id>                              staff: {plan?, status?, overrides?,
                                                                 data_region?, jurisdiction?}
    GET    /api/tenants/<id>/keys                         its keys (never their hash)
    POST   /api/tenants/<id>/keys                         {name, scopes?, expires_at?}: the
                                                          plaintext key, shown once (201)
    GET    /api/tenants/<id>/keys/<key_id>                one key
    DELETE /api/tenants/<id>/keys/<key_id>                revoke it (204)
    POST   /api/tenants/<id>/keys/<key_id>/rotate         {grace_seconds?}: a new key (shown
                                                          once); the old one expires after
                                                          the grace period (201)
    GET    /api/tenants/<id>/members                      members and their roles
    POST   /api/tenants/<id>/members                      {email, role, ttl_seconds?}: an
                                                          invitation, as below (201): the
                                                          same answer whether or not the
                                                          email has an account
    PATCH  /api/tenants/<id>/members/<membership_id>      {role}
    DELETE /api/tenants/<id>/members/<membership_id>      remove (anyone may leave) (204)
    GET    /api/tenants/<id>/invitations                  invitations and their state
    POST   /api/tenants/<id>/invitations                  {email, role, ttl_seconds?}: the
                                                          one-time token, shown once (201)
    DELETE /api/tenants/<id>/invitations/<invitation_id>  withdraw a pending one (204)
    POST   /api/invitations/accept                        {token}: join as the invited email
    (usage and invoices: billing/api.py)
    GET    /api/plans, POST /api/plans                    staff: plans, create one
    GET    /api/plans/<id>, PATCH /api/plans/<id>         staff: one plan, edit its limits,
                                                          allowed models, description

Users sign in with a session or HTTP Basic. Roles: every member sees the tenant, its
keys, members and usage; owners and admins manage keys, members and invitations (only
owners grant, change or remove the owner role); billing users, owners and admins see
invoices. Operators holding the tenants permission (tenants/permissions.py; `is_staff`
alone is not enough) see and manage every tenant and the plans; "staff" below means them.

Tenant isolation: a tenant is only ever fetched through the caller's membership of it
(staff aside), and every other object through that tenant, so another tenant's id and
an id that does not exist answer the same 404. A member lacking the role gets 403, and
only for a tenant they belong to (checked before any object is looked up, so a 403
says nothing about other tenants' ids either). Errors: {"error": {"message", "code"}}
(rbee/api_errors.py, for every DRF endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.urls import path
from django.utils import timezone
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.actors import user_actor
from tenants.auth import API_AUTHENTICATION
from tenants.errors import TenantError, TenantErrorCode
from tenants.models import ApiKey, Invitation, Membership, Plan, Tenant
from tenants.permissions import TenantsOperator, may_operate
from tenants.selectors import effective_limits
from tenants.services import (
    SCOPE_ENDPOINTS,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    invitation_accept,
    invitation_cancel,
    invitation_create,
    membership_remove,
    membership_set_role,
    plan_audit,
    tenant_set_overrides,
    tenant_set_plan,
    tenant_set_prompt_retention,
    tenant_set_residency,
    tenant_set_status,
)

Role = Membership.Role
MANAGERS = (Role.OWNER, Role.ADMIN)
INVOICE_READERS = (Role.OWNER, Role.ADMIN, Role.BILLING)
MAX_GRACE = timedelta(days=30)
MAX_INVITATION_TTL = timedelta(days=30)
NOT_FOUND_MESSAGE = "not found"


# Errors: raised as domain errors (or DRF's), answered by the one handler of every DRF
# endpoint (rbee/api_errors.py, REST_FRAMEWORK["EXCEPTION_HANDLER"]) as
# {"error": {"message", "code"}}.


def not_found() -> TenantError:
    """The one 404 of this API: the same for 'not yours' and 'does not exist'."""
    return TenantError(TenantErrorCode.NOT_FOUND, NOT_FOUND_MESSAGE)


def forbidden(message: str = "your role in this tenant does not allow this") -> TenantError:
    return TenantError(TenantErrorCode.FORBIDDEN, message)


# Access ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """The caller's standing in one tenant: its role there (None: not a member), and
    whether the caller is an operator holding the tenants permission (`staff`)."""

    tenant: Tenant
    role: str | None
    staff: bool

    def can(self, *roles: str) -> bool:
        return self.staff or self.role in roles

    def require(self, *roles: str) -> None:
        if not self.can(*roles):
            raise forbidden()


def tenant_access(request: Request, tenant_id: int, *, audit: bool = False) -> Access:
    """The tenant, fetched through the caller's membership of it (operators with the
    tenants permission: any tenant; with `audit`, for views that only read usage and
    invoices, operators with the audit permission too); otherwise the same 404 whether it
    exists or not."""
    user = request.user
    operator = may_operate(user, "tenants") or (audit and may_operate(user, "audit"))
    membership = (
        Membership.objects.select_related("tenant__plan")
        .filter(tenant_id=tenant_id, user=user)
        .first()
    )
    if membership is not None:
        return Access(tenant=membership.tenant, role=membership.role, staff=operator)
    if operator:
        tenant = Tenant.objects.select_related("plan").filter(pk=tenant_id).first()
        if tenant is not None:
            return Access(tenant=tenant, role=None, staff=True)
    raise not_found()


MAX_ID = 2**63 - 1  # the largest primary key; SQLite cannot even bind a larger int


class PortalView(APIView):
    authentication_classes = API_AUTHENTICATION
    permission_classes = [IsAuthenticated]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication and permissions first
        if any(isinstance(v, int) and v > MAX_ID for v in kwargs.values()):
            raise not_found()


class StaffOnlyView(PortalView):
    """Operators holding the tenants permission (plans)."""

    permission_classes = [TenantsOperator]


def valid(serializer: serializers.Serializer[Any]) -> dict[str, Any]:
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# Output ---------------------------------------------------------------------------------


def tenant_data(tenant: Tenant, role: str | None) -> dict[str, Any]:
    plan = tenant.plan
    return {
        "id": tenant.pk,
        "name": tenant.name,
        "plan": plan.name if plan is not None else None,
        "status": tenant.status,
        "limits": effective_limits(tenant),
        "allowed_models": list(plan.allowed_models or []) if plan is not None else [],
        "overrides": tenant.overrides if isinstance(tenant.overrides, dict) else {},
        "data_region": tenant.data_region,
        "jurisdiction": tenant.jurisdiction,
        "prompt_retention": tenant.prompt_retention,
        "prompt_retention_days": tenant.prompt_retention_days,
        "role": role,
        "created_at": serializers.DateTimeField().to_representation(tenant.created_at),
    }


class KeyOutput(serializers.ModelSerializer[ApiKey]):
    display = serializers.CharField(read_only=True)
    state = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "display",
            "scopes",
            "data_region",
            "state",
            "expires_at",
            "replaced_by",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]

    def get_state(self, key: ApiKey) -> str:
        if key.revoked_at is not None:
            return "revoked"
        if key.expires_at is not None and key.expires_at <= timezone.now():
            return "expired"
        return "active"


class MemberOutput(serializers.ModelSerializer[Membership]):
    username = serializers.CharField(source="user.username")
    email = serializers.CharField(source="user.email")

    class Meta:
        model = Membership
        fields = ["id", "user_id", "username", "email", "role", "created_at"]


class InvitationOutput(serializers.ModelSerializer[Invitation]):
    invited_by = serializers.SerializerMethodField()
    state = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "role",
            "state",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
        ]

    def get_invited_by(self, invitation: Invitation) -> str | None:
        return invitation.invited_by.username if invitation.invited_by is not None else None

    def get_state(self, invitation: Invitation) -> str:
        if invitation.accepted_at is not None:
            return "accepted"
        if invitation.expires_at <= timezone.now():
            return "expired"
        return "pending"


class PlanOutput(serializers.ModelSerializer[Plan]):
    class Meta:
        model = Plan
        fields = [
            "id",
            "name",
            "description",
            "allowed_models",
            *Plan.LIMIT_FIELDS,
            "queue_weight",
            "max_priority",
            "stripe_price_id",
            "created_at",
        ]


# Tenants --------------------------------------------------------------------------------


class TenantsApi(PortalView):
    def get(self, request: Request) -> Response:
        user = request.user
        roles = dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))
        tenants: QuerySet[Tenant] = Tenant.objects.select_related("plan").order_by("name")
        if not (may_operate(user, "tenants") or may_operate(user, "audit")):
            tenants = tenants.filter(memberships__user=user)
        return Response({"data": [tenant_data(t, roles.get(t.pk)) for t in tenants]})


class TenantDetailApi(PortalView):
    class InputSerializer(serializers.Serializer[Any]):
        plan = serializers.CharField(max_length=64, required=False)
        status = serializers.ChoiceField(choices=Tenant.Status.values, required=False)
        overrides = serializers.DictField(
            child=serializers.IntegerField(min_value=0, allow_null=True), required=False
        )
        # "" = anywhere; else only hives the operator placed there (tenants.services checks).
        data_region = serializers.CharField(max_length=32, required=False, allow_blank=True)
        jurisdiction = serializers.CharField(max_length=2, required=False, allow_blank=True)
        prompt_retention = serializers.CharField(max_length=8, required=False)
        prompt_retention_days = serializers.IntegerField(required=False)

    def get(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        return Response(tenant_data(access.tenant, access.role))

    def patch(self, request: Request, tenant_id: int) -> Response:
        """Staff only: change the plan, the status, or single limits (merged into the
        tenant's overrides; null means unlimited)."""
        access = tenant_access(request, tenant_id)
        if not access.staff:
            raise forbidden(
                "only operators with the tenants permission may change a tenant's plan, "
                "status or limits"
            )
        v = valid(self.InputSerializer(data=request.data))
        tenant = access.tenant
        actor = user_actor(request.user)
        with transaction.atomic():
            if "plan" in v:
                tenant = tenant_set_plan(tenant=tenant, plan_name=v["plan"], actor=actor)
            if "status" in v:
                tenant = tenant_set_status(tenant=tenant, status=v["status"], actor=actor)
            if "overrides" in v:
                tenant = tenant_set_overrides(tenant=tenant, overrides=v["overrides"], actor=actor)
            if "data_region" in v or "jurisdiction" in v:
                tenant = tenant_set_residency(
                    tenant=tenant,
                    data_region=v.get("data_region"),
                    jurisdiction=v.get("jurisdiction"),
                    actor=actor,
                )
            if "prompt_retention" in v or "prompt_retention_days" in v:
                tenant = tenant_set_prompt_retention(
                    tenant=tenant,
                    mode=v.get("prompt_retention"),
                    days=v.get("prompt_retention_days"),
                    actor=actor,
                )
        tenant = Tenant.objects.select_related("plan").get(pk=tenant.pk)
        return Response(tenant_data(tenant, access.role))


# Keys -----------------------------------------------------------------------------------


def _key(access: Access, key_id: int) -> ApiKey:
    key = ApiKey.objects.select_related("tenant").filter(pk=key_id, tenant=access.tenant).first()
    if key is None:
        raise not_found()
    return key


class KeysApi(PortalView):
    class ScopesInput(serializers.Serializer[Any]):
        endpoints = serializers.ListField(
            child=serializers.ChoiceField(choices=SCOPE_ENDPOINTS), required=False
        )
        models = serializers.ListField(
            child=serializers.CharField(max_length=200), required=False, max_length=200
        )

    class InputSerializer(serializers.Serializer[Any]):
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        scopes = serializers.DictField(required=False, default=dict)
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        # Narrows the tenant's data region (never widens it: tenants.services refuses).
        data_region = serializers.CharField(
            max_length=32, required=False, allow_blank=True, default=""
        )

        def validate_scopes(self, value: dict[str, Any]) -> dict[str, Any]:
            unknown = sorted(set(value) - {"endpoints", "models"})
            if unknown:
                raise serializers.ValidationError(
                    f"unknown scope {', '.join(unknown)}: use endpoints, models"
                )
            return valid(KeysApi.ScopesInput(data=value))

        def validate_expires_at(self, value: datetime | None) -> datetime | None:
            if value is not None and value <= timezone.now():
                raise serializers.ValidationError("must be in the future")
            return value

    def get(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        keys = ApiKey.objects.filter(tenant=access.tenant).order_by("created_at", "id")
        return Response({"data": KeyOutput(keys, many=True).data})

    def post(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        v = valid(self.InputSerializer(data=request.data))
        key, plaintext = api_key_create(
            tenant=access.tenant,
            name=v["name"],
            scopes=v["scopes"],
            expires_at=v["expires_at"],
            actor=user_actor(request.user),
            created_by=request.user,
            data_region=v["data_region"],
        )
        return Response({**KeyOutput(key).data, "key": plaintext}, status=status.HTTP_201_CREATED)


class KeyDetailApi(PortalView):
    def get(self, request: Request, tenant_id: int, key_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        return Response(KeyOutput(_key(access, key_id)).data)

    def delete(self, request: Request, tenant_id: int, key_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        api_key_revoke(api_key=_key(access, key_id), actor=user_actor(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class KeyRotateApi(PortalView):
    class InputSerializer(serializers.Serializer[Any]):
        grace_seconds = serializers.IntegerField(
            min_value=0, max_value=int(MAX_GRACE.total_seconds()), default=24 * 3600
        )

    def post(self, request: Request, tenant_id: int, key_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        old = _key(access, key_id)
        if old.scopes.get("operator") is True:
            # Rotation copies the scopes: through the portal it would mint an operator key.
            raise exceptions.PermissionDenied(
                "an operator key is rotated on the queen: rbee key rotate PREFIX --tenant NAME"
            )
        v = valid(self.InputSerializer(data=request.data))
        new, plaintext = api_key_rotate(
            api_key=old,
            grace=timedelta(seconds=v["grace_seconds"]),
            actor=user_actor(request.user),
        )
        old.refresh_from_db()
        return Response(
            {**KeyOutput(new).data, "key": plaintext, "replaces": KeyOutput(old).data},
            status=status.HTTP_201_CREATED,
        )


# Members --------------------------------------------------------------------------------


def _membership(access: Access, membership_id: int) -> Membership:
    m = (
        Membership.objects.select_related("user", "tenant")
        .filter(pk=membership_id, tenant=access.tenant)
        .first()
    )
    if m is None:
        raise not_found()
    return m


def _require_owner_for(access: Access, *roles: str) -> None:
    """Only owners (and staff) grant, change or take away the owner role."""
    if Role.OWNER in roles and not access.can(Role.OWNER):
        raise forbidden("only an owner may grant, change or remove the owner role")


class MembersApi(PortalView):
    class InputSerializer(serializers.Serializer[Any]):
        email = serializers.EmailField()
        role = serializers.ChoiceField(choices=Role.values, default=Role.MEMBER)
        ttl_seconds = serializers.IntegerField(
            min_value=60,
            max_value=int(MAX_INVITATION_TTL.total_seconds()),
            default=7 * 24 * 3600,
        )

    def get(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        members = (
            Membership.objects.select_related("user")
            .filter(tenant=access.tenant)
            .order_by("created_at", "id")
        )
        return Response({"data": MemberOutput(members, many=True).data})

    def post(self, request: Request, tenant_id: int) -> Response:
        """Adding a member is inviting them: the answer is an invitation (and its one-time
        token), the same whether the email has an account here or not, so it tells nobody
        who has one; the person becomes a member only by accepting it, signed in as that
        email (POST /api/invitations/accept)."""
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        if hasattr(request.data, "keys") and "username" in request.data:
            # A lookup by username would answer differently for names that exist.
            raise exceptions.ValidationError(
                "add members by email: they join when they accept the invitation"
            )
        return _invite(request, access, valid(self.InputSerializer(data=request.data)))


class MemberDetailApi(PortalView):
    class InputSerializer(serializers.Serializer[Any]):
        role = serializers.ChoiceField(choices=Role.values)

    def patch(self, request: Request, tenant_id: int, membership_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        m = _membership(access, membership_id)
        v = valid(self.InputSerializer(data=request.data))
        _require_owner_for(access, m.role, v["role"])
        m = membership_set_role(membership=m, role=v["role"], actor=user_actor(request.user))
        return Response(MemberOutput(m).data)

    def delete(self, request: Request, tenant_id: int, membership_id: int) -> Response:
        """Owners and admins remove members; anyone may remove themselves (leave)."""
        access = tenant_access(request, tenant_id)
        own = Membership.objects.filter(
            pk=membership_id, tenant=access.tenant, user=request.user
        ).exists()
        if not own:
            access.require(*MANAGERS)
        m = _membership(access, membership_id)
        if not own:
            _require_owner_for(access, m.role)
        membership_remove(membership=m, actor=user_actor(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


# Invitations ----------------------------------------------------------------------------


class InvitationsApi(PortalView):
    class InputSerializer(serializers.Serializer[Any]):
        email = serializers.EmailField()
        role = serializers.ChoiceField(choices=Role.values, default=Role.MEMBER)
        ttl_seconds = serializers.IntegerField(
            min_value=60,
            max_value=int(MAX_INVITATION_TTL.total_seconds()),
            default=7 * 24 * 3600,
        )

    def get(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        rows = (
            Invitation.objects.select_related("invited_by")
            .filter(tenant=access.tenant)
            .order_by("-created_at", "-id")
        )
        return Response({"data": InvitationOutput(rows, many=True).data})

    def post(self, request: Request, tenant_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        return _invite(request, access, valid(self.InputSerializer(data=request.data)))


def _invite(request: Request, access: Access, v: dict[str, Any]) -> Response:
    """An invitation for v["email"] with v["role"]: the one-time token, shown once (201).
    Nothing about whether that email has an account here is looked up or answered."""
    _require_owner_for(access, v["role"])
    invitation, token = invitation_create(
        tenant=access.tenant,
        email=v["email"],
        role=v["role"],
        invited_by=request.user,
        ttl=timedelta(seconds=v["ttl_seconds"]),
        actor=user_actor(request.user),
    )
    return Response(
        {**InvitationOutput(invitation).data, "token": token},
        status=status.HTTP_201_CREATED,
    )


class InvitationDetailApi(PortalView):
    def delete(self, request: Request, tenant_id: int, invitation_id: int) -> Response:
        access = tenant_access(request, tenant_id)
        access.require(*MANAGERS)
        invitation = Invitation.objects.filter(pk=invitation_id, tenant=access.tenant).first()
        if invitation is None:
            raise not_found()
        _require_owner_for(access, invitation.role)
        invitation_cancel(invitation=invitation, actor=user_actor(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationAcceptApi(PortalView):
    class InputSerializer(serializers.Serializer[Any]):
        token = serializers.CharField(max_length=200)

    def post(self, request: Request) -> Response:
        v = valid(self.InputSerializer(data=request.data))
        m = invitation_accept(token=v["token"], user=request.user)
        tenant = Tenant.objects.select_related("plan").get(pk=m.tenant_id)
        return Response(
            {"membership": MemberOutput(m).data, "tenant": tenant_data(tenant, m.role)},
            status=status.HTTP_201_CREATED,
        )


# Plans (staff) --------------------------------------------------------------------------


class PlanInput(serializers.ModelSerializer[Plan]):
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=1000
    )
    # The plan's share of a busy model's queue, and the highest priority it may ask for.
    queue_weight = serializers.IntegerField(min_value=1, max_value=100, required=False)
    max_priority = serializers.ChoiceField(choices=["interactive", "batch"], required=False)

    class Meta:
        model = Plan
        fields = [
            "name",
            "description",
            "allowed_models",
            *Plan.LIMIT_FIELDS,
            "queue_weight",
            "max_priority",
            "stripe_price_id",
        ]


class PlanUpdateInput(PlanInput):
    """A plan's name is its identity (tenants carry it as their tier): not editable."""

    class Meta(PlanInput.Meta):
        read_only_fields = ["name"]


class PlansApi(StaffOnlyView):
    post_input = PlanInput  # described in the OpenAPI schema (rbee/openapi.py)

    def get(self, request: Request) -> Response:
        return Response({"data": PlanOutput(Plan.objects.order_by("name"), many=True).data})

    def post(self, request: Request) -> Response:
        body = PlanInput(data=request.data)
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            plan = body.save()
            plan_audit(plan=plan, created=True, actor=user_actor(request.user))
        return Response(PlanOutput(plan).data, status=status.HTTP_201_CREATED)


class PlanDetailApi(StaffOnlyView):
    patch_input = PlanUpdateInput

    def _plan(self, plan_id: int) -> Plan:
        plan = Plan.objects.filter(pk=plan_id).first()
        if plan is None:
            raise not_found()
        return plan

    def get(self, request: Request, plan_id: int) -> Response:
        return Response(PlanOutput(self._plan(plan_id)).data)

    def patch(self, request: Request, plan_id: int) -> Response:
        plan = self._plan(plan_id)
        if "name" in request.data and request.data["name"] != plan.name:
            raise exceptions.ValidationError("a plan cannot be renamed")
        body = PlanUpdateInput(plan, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            plan = body.save()
            plan_audit(plan=plan, created=False, actor=user_actor(request.user))
        return Response(PlanOutput(plan).data)


# Routes (rbee/urls.py: path("", include("tenants.api"))) ---------------------------------

T = "api/tenants/<int:tenant_id>"

urlpatterns = [
    path("api/tenants", TenantsApi.as_view()),
    path(T, TenantDetailApi.as_view()),
    path(f"{T}/keys", KeysApi.as_view()),
    path(f"{T}/keys/<int:key_id>", KeyDetailApi.as_view()),
    path(f"{T}/keys/<int:key_id>/rotate", KeyRotateApi.as_view()),
    path(f"{T}/members", MembersApi.as_view()),
    path(f"{T}/members/<int:membership_id>", MemberDetailApi.as_view()),
    path(f"{T}/invitations", InvitationsApi.as_view()),
    path(f"{T}/invitations/<int:invitation_id>", InvitationDetailApi.as_view()),
    path("api/invitations/accept", InvitationAcceptApi.as_view()),
    path("api/plans", PlansApi.as_view()),
    path("api/plans/<int:plan_id>", PlanDetailApi.as_view()),
]
