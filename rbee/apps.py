from django.apps import AppConfig


class RbeeConfig(AppConfig):
    name = "rbee"
    verbose_name = "rbee"
