from django.apps import AppConfig


class RbeeConfig(AppConfig):
    name = "rbee"
    verbose_name = "rbee"

    def ready(self) -> None:
        # The apps declare their tasks with `shared_task`; loading the project's Celery
        # app here makes it the current app, with the settings' broker and eagerness.
        from rbee import celery  # noqa: F401
