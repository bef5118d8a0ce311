"""Start-up loading of preconfigured connectors (ACTIONS_CONFIG) in the audit trail.

The configured set is compared with the one the trail last saw (the newest "load" record), so a record is written
once per change of the configuration, not on every start of every worker: per connector, a create, an update with
its diff, or a delete (object type "connector", so the connector's history shows them), and one "load" record
holding the new set. Secrets are compared by a keyed fingerprint (HMAC with SECRET_KEY), never stored.
"""

import hashlib
import hmac

from django.conf import settings
from django.db import connection, transaction

from connectors.audit import context, trail
from connectors.audit.choices import Via
from connectors.audit.models import AuditRecord

FIELDS = ("name", "provider", "api_url", "default_model", "headers", "organization_id", "project_id")
STATE_TYPE = "preconfigured_connector"


def _fingerprint(secret: str) -> str:
    if not secret:
        return ""
    return hmac.new(settings.SECRET_KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()[:32]


def _state(connectors: dict) -> dict:
    return {
        connector_id: {**{name: getattr(c, name) for name in FIELDS}, "api_key": _fingerprint(c.api_key)}
        for connector_id, c in sorted(connectors.items())
    }


def _diff(before: dict, after: dict) -> dict:
    changes = {name: [before.get(name), after.get(name)] for name in FIELDS if before.get(name) != after.get(name)}
    if before.get("api_key") != after.get("api_key"):
        changes["api_key"] = "API key changed"
    return changes


def _public(state: dict) -> dict:
    values = {name: state[name] for name in FIELDS}
    if state.get("api_key"):
        values["api_key"] = "API key set"
    return values


def record_preconfigured_changes() -> int:
    """Record what changed in the preconfigured connectors since the trail last saw them. Returns the number of
    connectors added, changed or removed (0: nothing written)."""
    from connectors.preconfigured import preconfigured_connectors

    current = _state(preconfigured_connectors())
    with context.acting(via=Via.SYSTEM, request=None, user=None), transaction.atomic():
        if connection.vendor == "postgresql":
            # Workers starting together: one compares and writes, the others then see its record.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext('connectors_admin.audit.preconfigured'))")
        last = (AuditRecord.objects.filter(object_type=STATE_TYPE, object_id="", action="load")
                .order_by("-at", "-id").values_list("changes", flat=True).first())
        previous = (last or {}).get("configured", {})
        if previous == current:
            return 0
        touched = 0
        for connector_id in sorted(set(previous) | set(current)):
            before, after = previous.get(connector_id), current.get(connector_id)
            if before == after:
                continue
            touched += 1
            if before is None:
                action, changes, name = "create", _public(after), after["name"]
            elif after is None:
                action, changes, name = "delete", _public(before), before["name"]
            else:
                action, changes, name = "update", _diff(before, after), after["name"]
            trail.append("connector", action, object_id=connector_id, object_repr=f"{name} (preconfigured)",
                             changes={**changes, "preconfigured": True})
        trail.append(STATE_TYPE, "load", object_repr="preconfigured connectors (ACTIONS_CONFIG)",
                         changes={"configured": current})
    return touched
