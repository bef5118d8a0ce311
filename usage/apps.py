from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage"

    def ready(self) -> None:
        from connectors.roles import ROLES as CONNECTOR_ROLES
        from connectors.roles import sync_roles_after_migrate
        from usage.roles import ROLES

        # The connector roles too: Connector admins include usage's permission, which exists only from here on.
        sync_roles_after_migrate(self, {**CONNECTOR_ROLES, **ROLES})
