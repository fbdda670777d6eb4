from typing import Any

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Metering and billing"

    def ready(self) -> None:
        from billing import retention
        from billing.gdpr import register_providers

        register_providers()
        retention.register()

        from django.db.models.signals import post_delete

        from tenants.models import ApiKey

        post_delete.connect(_key_deleted, sender=ApiKey, dispatch_uid="billing-rollup-key")


def _key_deleted(sender: Any, instance: Any, origin: Any = None, **kwargs: Any) -> None:
    """A key deleted on its own (the admin): its usage rows' key became NULL, so its
    daily roll-up rows become keyless too. A key deleted with its tenant is not: the
    tenant's roll-up goes with it (and a row added here would outlive the tenant)."""
    from django.db.models import QuerySet

    from billing.services import usage_rollup_forget_key
    from tenants.models import ApiKey

    alone = isinstance(origin, ApiKey) or (isinstance(origin, QuerySet) and origin.model is ApiKey)
    if alone:
        usage_rollup_forget_key(tenant_id=instance.tenant_id, key_id=instance.pk)
