"""Operators' edits in the Django admin (the console) are audit events too: the admin
writes models directly, past the services that record the others. Every ModelAdmin of
the apps mixes this in (tenants, billing, hives admin modules).

The admin's own change messages name the fields changed; the event keeps the model,
the object's id and those field names (never the values, which may be personal or
secret), with the operator as actor and, for a user account, that person as subject.
`log_*` run inside the admin's transaction (changeform and delete views are atomic),
so a failed save leaves no event."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from gdpr import audit
from gdpr.actions import AuditAction
from tenants.actors import user_actor, user_subject


def _fields(message: Any) -> list[str]:
    """The field names of the admin's change message ([{"changed": {"fields": [...]}}])."""
    out: list[str] = []
    for part in message if isinstance(message, list) else []:
        for verb in ("added", "changed", "deleted"):
            body = part.get(verb) if isinstance(part, dict) else None
            if isinstance(body, dict):
                out += [str(f) for f in body.get("fields", [])]
                if "name" in body:
                    out.append(f"{verb} {body['name']}")
    return out


def _record(request: Any, obj: Any, action: AuditAction, **data: Any) -> None:
    from django.contrib.auth import get_user_model

    subject = user_subject(obj) if isinstance(obj, get_user_model()) else None
    audit.record(
        action,
        actor=user_actor(getattr(request, "user", None)),
        tenant_id=getattr(obj, "tenant_id", None),
        subject=subject,
        data={"model": obj._meta.label_lower, "object_id": str(obj.pk), **data},
    )


class AuditedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    def log_addition(self, request: Any, obj: Any, message: Any) -> Any:
        _record(request, obj, AuditAction.ADMIN_ADD)
        return super().log_addition(request, obj, message)

    def log_change(self, request: Any, obj: Any, message: Any) -> Any:
        _record(request, obj, AuditAction.ADMIN_CHANGE, fields=_fields(message))
        return super().log_change(request, obj, message)

    def log_deletions(self, request: Any, queryset: Any) -> Any:
        for obj in queryset:
            _record(request, obj, AuditAction.ADMIN_DELETE)
        return super().log_deletions(request, queryset)
