from django.contrib import admin

from hives.models import CatalogModel, Hive, ModelApproval, Worker
from tenants.admin_audit import AuditedAdmin


@admin.register(Hive)
class HiveAdmin(AuditedAdmin):
    list_display = (
        "name",
        "status",
        "region",
        "reported_region",
        "trust_models",
        "disabled",
        "token_revoked",
        "last_seen_at",
        "version",
    )
    readonly_fields = (
        "token_prefix",
        "token_hash",
        "channel_name",
        "devices",
        "telemetry",
        "reported_region",
    )


@admin.register(CatalogModel)
class CatalogModelAdmin(AuditedAdmin):
    list_display = ("name", "capability", "engine", "source")


@admin.register(Worker)
class WorkerAdmin(AuditedAdmin):
    list_display = ("model", "hive", "device", "state", "pinned", "inflight", "updated_at")


@admin.register(ModelApproval)
class ModelApprovalAdmin(AuditedAdmin):
    list_display = ("model_name", "hive", "approved", "engine", "source", "reason", "updated_at")
    list_filter = ("approved",)
