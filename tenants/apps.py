from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants and API keys"

    def ready(self) -> None:
        from gdpr import access
        from tenants.gdpr import TenantsAccess, register_providers

        access.register(TenantsAccess())
        register_providers()
