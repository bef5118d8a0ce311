import logging

from django.apps import AppConfig

logger = logging.getLogger("connectors.actions_config")


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Connectors"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from connectors import preconfigured
        from connectors.access.roles import register_roles
        from connectors.api import auth  # noqa: F401 - auth connects its signals
        from connectors.caching import connector_cache
        from connectors.models import Connector
        from connectors.permissions import ROLES

        register_roles(self, ROLES)
        post_save.connect(connector_cache.announce_change, sender=Connector, dispatch_uid="connector_cache_saved")
        post_delete.connect(connector_cache.announce_change, sender=Connector, dispatch_uid="connector_cache_deleted")
        # Fail at start-up, not at first use, when a preconfigured connector in ACTIONS_CONFIG is invalid.
        preconfigured.preconfigured_connectors()
        log_actions_config_notes()


def log_actions_config_notes() -> None:
    """Once per process: the kibana.yml keys ACTIONS_CONFIG ignored (by name only) and Kibana's start-up warnings."""
    from django.conf import settings

    config = settings.ACTIONS_CONFIG
    if config.ignored_keys:
        logger.info("ACTIONS_CONFIG: ignoring settings outside xpack.actions: %s", ", ".join(config.ignored_keys))
    for warning in config.warnings:
        logger.warning("ACTIONS_CONFIG: %s", warning)
