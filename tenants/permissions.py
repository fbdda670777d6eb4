"""Who may use the operators' management APIs: one Django permission per area
(tenants.models.Operator), checked on every management endpoint. A superuser holds them
all; `is_staff` alone holds none.

    fleet      hives, models, workers, downloads, aliases   (hives/management_api.py)
    scheduler  the Rhai scheduler script                    (inference/management_api.py)
    tenants    tenants, keys, plans, usage, invoices, and acting as any tenant
                                                            (tenants/api.py, billing/api.py)
    audit      reading every tenant's usage and invoices    (billing/api.py; audit/GDPR)
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from tenants.models import OPERATOR_AREAS as AREAS


def may_operate(user: Any, area: str) -> bool:
    """Whether `user` holds the operators' permission of `area` (a superuser: every one)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    return bool(user.is_active and user.has_perm(AREAS[area]))


class _Operator(BasePermission):
    area = ""
    message = "your account lacks the operators' permission for this area"

    def has_permission(self, request: Request, view: Any) -> bool:
        return may_operate(request.user, self.area)


class FleetOperator(_Operator):
    area = "fleet"
    message = "this needs the operators' fleet permission (rbee operator grant NAME --perm fleet)"


class SchedulerOperator(_Operator):
    area = "scheduler"
    message = (
        "this needs the operators' scheduler permission (rbee operator grant NAME --perm scheduler)"
    )


class TenantsOperator(_Operator):
    area = "tenants"
    message = (
        "this needs the operators' tenants permission (rbee operator grant NAME --perm tenants)"
    )


class AuditOperator(_Operator):
    area = "audit"
    message = "this needs the operators' audit permission (rbee operator grant NAME --perm audit)"


class AnyOperator(BasePermission):
    """An operator of any area (the API's OpenAPI description: /api/schema)."""

    message = "this is for operators"

    def has_permission(self, request: Request, view: Any) -> bool:
        return any(may_operate(request.user, area) for area in AREAS)


class SuperuserOnly(BasePermission):
    """The default for a DRF view that names no permission: nobody but a superuser."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_superuser)
