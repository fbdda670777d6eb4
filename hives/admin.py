from django.contrib import admin

from hives.models import CatalogModel, Hive, Worker


@admin.register(Hive)
class HiveAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "region", "last_seen_at", "version")
    readonly_fields = ("token_prefix", "token_hash", "channel_name", "devices", "telemetry")


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ("name", "capability", "engine", "source")


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("model", "hive", "device", "state", "pinned", "inflight", "updated_at")
