from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "OpenAI-compatible API"

    def ready(self) -> None:
        from inference import retention

        retention.register()
