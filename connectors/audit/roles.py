"""The audit trail's read-only role, kept in step by migrate like the other roles (connectors/roles.py)."""

from connectors.audit.permissions import VIEW_AUDIT_TRAIL

ROLES: dict[str, list[str]] = {
    "Auditors": [VIEW_AUDIT_TRAIL],
}
