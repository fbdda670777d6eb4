from django.apps import AppConfig


class HivesConfig(AppConfig):
    name = "hives"
    verbose_name = "Hives, workers and models"
