from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Metering and billing"

    def ready(self) -> None:
        from billing import retention
        from billing.gdpr import register_providers

        register_providers()
        retention.register()
