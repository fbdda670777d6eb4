from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and API keys"

    def ready(self) -> None:
        from gdpr import access, retention
        from tenants.gdpr import TenantsAccess, register_providers, tenant_id_of

        access.register(TenantsAccess())
        register_providers()
        retention.register_tenant_lookup(tenant_id_of)
