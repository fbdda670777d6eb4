from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User

from tenants.admin_audit import AuditedAdmin
from tenants.models import ApiKey, Invitation, Membership, Plan, Tenant


@admin.register(Plan)
class PlanAdmin(AuditedAdmin):
    list_display = (
        "name",
        "requests_per_day",
        "tokens_per_day",
        "images_per_day",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent",
    )
    search_fields = ("name",)


@admin.register(Tenant)
class TenantAdmin(AuditedAdmin):
    list_display = ("name", "tier", "plan", "status", "created_at")
    search_fields = ("name",)


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    list_display = ("display", "tenant", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    list_filter = ("tenant",)


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role", "tenant")


@admin.register(Invitation)
class InvitationAdmin(AuditedAdmin):
    list_display = ("email", "tenant", "role", "expires_at", "accepted_at")
    readonly_fields = ("token_hash",)


# Operators' accounts and permissions edited in the admin: audited like `rbee operator`.
admin.site.unregister(User)


@admin.register(User)
class AuditedUserAdmin(AuditedAdmin, UserAdmin):  # type: ignore[misc]
    pass
