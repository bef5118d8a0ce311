import json

from django.db import models
from django.utils import timezone

from connectors.audit.choices import Via  # noqa: F401 - re-exported for callers

# The values the trail uses, offered by the /audit/ filter (any value can still be typed into the URL).
ACTIONS = ("create", "update", "delete", "revoke", "first_use", "grant", "remove", "sign_in", "sign_in_failed",
           "load", "prune", "deprovision")
OBJECT_TYPES = ("space", "space_role_grant", "connector", "preconfigured_connector", "api_key", "user", "group", "audit_trail", "price",
                "connector_pricing", "budget", "rate_limit", "alert_channel", "error_rate_rule")


class AuditRecord(models.Model):
    """One change or sign-in. Append-only: nothing in the app updates or deletes a record (on PostgreSQL a trigger,
    migration 0003, refuses it); only ``prune_audit_records`` removes old ones, through that migration's function.

    No foreign keys on purpose: a record outlives the user, key or connector it names, and a cascade or SET NULL
    would have to rewrite it.
    """

    at = models.DateTimeField(default=timezone.now)
    # Who: a user, an API key and its owner, or nobody ("system": start-up, migrate, a command run by the operator).
    actor = models.CharField(max_length=150, help_text='Username, or "system".')
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    api_key_name = models.CharField(max_length=130, blank=True)
    via = models.CharField(max_length=16, choices=Via.choices)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    # What: the object ("connector", "api_key", "user", "group", "preconfigured_connector", "audit_trail") and
    # what happened to it ("create", "update", "delete", "revoke", "first_use", "grant", "remove", "sign_in",
    # "sign_in_failed", "load", "prune"; see ACTIONS).
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=150, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    action = models.CharField(max_length=40)
    # Field-by-field {"field": [before, after]} for updates, the values for creates; secrets only ever appear as
    # "API key changed" / "PKI material changed". For sign-ins: {"method": ...}.
    changes = models.JSONField(default=dict, blank=True)
    # The space the change was made in (README "Spaces"): an Auditor of a space reads its records. Text, not a
    # foreign key, like the rest of the record.
    space_id = models.CharField(max_length=64, default="default", db_default="default")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # /audit/ with no filter, or with only a date range: ORDER BY at DESC, id DESC LIMIT 51, continued with
            # WHERE (at, id) < (cursor_at, cursor_id) (keyset pagination, README "Audit trail").
            models.Index(fields=["-at", "-id"], name="audit_at_id"),
            # /audit/?object_type=connector&object_id=<id> (a connector's history):
            # WHERE object_type = %s AND object_id = %s AND (at, id) < (...) ORDER BY at DESC, id DESC LIMIT 51.
            models.Index(fields=["object_type", "object_id", "-at", "-id"], name="audit_object_at_id"),
            # /audit/?actor=<username>: WHERE actor = %s AND (at, id) < (...) ORDER BY at DESC, id DESC LIMIT 51.
            models.Index(fields=["actor", "-at", "-id"], name="audit_actor_at_id"),
            # /audit/?action=sign_in_failed: WHERE action = %s AND (at, id) < (...) ORDER BY at DESC, id DESC.
            models.Index(fields=["action", "-at", "-id"], name="audit_action_at_id"),
            # /audit/ read by an Auditor of one space: WHERE space_id = %s AND (at, id) < (...) ORDER BY at DESC.
            models.Index(fields=["space_id", "-at", "-id"], name="audit_space_at_id"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type} {self.object_repr}"

    @property
    def change_lines(self) -> list[tuple[str, str]]:
        """The changes as (field, "before → after") for the page."""

        def shown(value) -> str:
            if value is None or value == "":
                return "—"
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

        lines = []
        for name, value in (self.changes or {}).items():
            if isinstance(value, list) and len(value) == 2 and name not in ("role", "permission"):
                lines.append((name, f"{shown(value[0])} → {shown(value[1])}"))
            elif isinstance(value, list):
                lines.append((name, ", ".join(shown(item) for item in value)))
            else:
                lines.append((name, shown(value)))
        return lines

    @property
    def who(self) -> str:
        if self.api_key_id:
            return f"API key “{self.api_key_name}” of {self.actor}"
        return self.actor
