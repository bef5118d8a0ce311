from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Connectors"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from connectors import preconfigured, roles
        from connectors.api import auth  # noqa: F401 - auth connects its signals
        from connectors.caching import connector_cache
        from connectors.models import Connector

        roles.sync_roles_after_migrate(self, roles.ROLES)
        post_save.connect(connector_cache.announce_change, sender=Connector, dispatch_uid="connector_cache_saved")
        post_delete.connect(connector_cache.announce_change, sender=Connector, dispatch_uid="connector_cache_deleted")
        # Fail at start-up, not at first use, when a preconfigured connector in ACTIONS_CONFIG is invalid.
        preconfigured.preconfigured_connectors()
