from django.contrib import admin

from billing.models import Invoice, MeterEvent, Price, StripeEvent, UsageEvent
from tenants.admin_audit import AuditedAdmin


@admin.register(Price)
class PriceAdmin(AuditedAdmin):
    list_display = ("model", "unit", "plan", "unit_price", "currency")
    list_filter = ("unit", "plan", "currency")


@admin.register(UsageEvent)
class UsageEventAdmin(AuditedAdmin):
    """Read-only: usage is a record, corrected (if ever) by new events, not edits."""

    list_display = (
        "created_at",
        "tenant",
        "model",
        "modality",
        "prompt_tokens",
        "completion_tokens",
        "images",
        "audio_seconds",
        "characters",
        "outcome",
    )
    list_filter = ("modality", "outcome", "tenant")

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(AuditedAdmin):
    list_display = ("tenant", "period_start", "period_end", "status", "total", "currency")
    list_filter = ("status",)


@admin.register(MeterEvent)
class MeterEventAdmin(AuditedAdmin):
    list_display = ("identifier", "event_name", "customer", "value", "sent_at", "attempts")
    list_filter = ("event_name",)


@admin.register(StripeEvent)
class StripeEventAdmin(AuditedAdmin):
    list_display = ("event_id", "type", "received_at")
