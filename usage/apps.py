from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage"

    def ready(self) -> None:
        from connectors.roles import sync_roles_after_migrate
        from usage.roles import ROLES

        sync_roles_after_migrate(self, ROLES)
