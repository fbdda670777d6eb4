from django.apps import AppConfig


class GdprConfig(AppConfig):
    name = "gdpr"
    verbose_name = "GDPR: audit log, export, erasure"

    def ready(self) -> None:
        from gdpr import consent, exchanges, retention
        from gdpr.stores import register_providers

        register_providers()
        retention.register_own()
        consent.register_provider()
        exchanges.register()
