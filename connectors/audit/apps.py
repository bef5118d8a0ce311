from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "connectors.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from connectors.access.roles import register_roles
        from connectors.audit import receivers
        from connectors.audit.permissions import ROLES

        receivers.connect()
        register_roles(self, ROLES)
        # migrate runs on every deploy: the preconfigured connectors are compared with the trail then (and at
        # server start-up, connectors_admin/asgi.py).
        post_migrate.connect(_record_preconfigured, sender=self, dispatch_uid="audit_preconfigured")


def _record_preconfigured(using=None, **kwargs) -> None:
    from django.db import DEFAULT_DB_ALIAS

    from connectors.audit.preconfigured import record_preconfigured_changes

    if (using or DEFAULT_DB_ALIAS) == DEFAULT_DB_ALIAS:
        record_preconfigured_changes()
