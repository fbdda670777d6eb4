from django.apps import AppConfig


class HivesConfig(AppConfig):
    name = "hives"
    verbose_name = "Hives, workers and models"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from hives.models import CatalogModel, Hive, ModelAlias, Worker
        from hives.services import fleet_changed

        # Hives, workers, models and aliases saved or deleted anywhere (services, the
        # admin, a cascade): the models and placements every queen process keeps are
        # dropped (hives.selectors.model_cached). An invalidation, not domain logic.
        def changed(**_: object) -> None:
            fleet_changed()

        for model in (CatalogModel, Hive, ModelAlias, Worker):
            post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"fleet-{model}")
            post_delete.connect(
                changed, sender=model, weak=False, dispatch_uid=f"fleet-del-{model}"
            )
