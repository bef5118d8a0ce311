from django.apps import AppConfig


class ThrottlingConfig(AppConfig):
    name = "connectors.throttling"
    label = "throttling"
    verbose_name = "Authentication throttling"
