from django.apps import AppConfig


class WebConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "web"
    verbose_name = "rbee web faces"

    def ready(self) -> None:
        from web import signals  # noqa: F401  (connects the sign-out receiver)
