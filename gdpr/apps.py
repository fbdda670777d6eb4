from django.apps import AppConfig


class GdprConfig(AppConfig):
    name = "gdpr"
    verbose_name = "GDPR: audit log, export, erasure"

    def ready(self) -> None:
        from gdpr import consent, exchanges, retention, services
        from gdpr.stores import register_providers

        register_providers()
        retention.register_own()
        services.register_exports_class()
        consent.register_provider()
        exchanges.register()
