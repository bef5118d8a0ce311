from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage"

    def ready(self) -> None:
        from connectors.access.roles import register_roles
        from connectors.caching import expiring_cache
        from usage.observability.metrics import count_cache_lookup
        from usage.permissions import ROLES

        register_roles(self, ROLES)
        expiring_cache.report_lookups_to(count_cache_lookup)
