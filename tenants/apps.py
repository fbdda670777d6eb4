from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and API keys"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from gdpr import access, retention
        from tenants.gdpr import TenantsAccess, register_providers, tenant_id_of
        from tenants.models import ApiKey, Plan, Tenant
        from tenants.services import callers_changed

        # Keys, tenants and plans saved or deleted anywhere (services, the admin, the
        # console, a cascade): the callers every queen process keeps are dropped
        # (tenants.selectors.caller_cached). An invalidation, not domain logic.
        def changed(**_: object) -> None:
            callers_changed()

        for model in (ApiKey, Tenant, Plan):
            post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"callers-{model}")
            post_delete.connect(
                changed, sender=model, weak=False, dispatch_uid=f"callers-del-{model}"
            )
        access.register(TenantsAccess())
        register_providers()
        retention.register_tenant_lookup(tenant_id_of)
