from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """What the project sets up once per process, before any request: nothing of its own to store."""

    name = "connectors_admin"
    verbose_name = "connectors-admin"

    def ready(self) -> None:
        from connectors_admin.settings_lookup import make_settings_lookup_plain

        make_settings_lookup_plain()
