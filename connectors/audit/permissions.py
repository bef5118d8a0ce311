"""The audit capability, by the dotted name ``has_perm`` takes: Django's view permission of the record model.

It lets a user read and export the whole trail at /audit/, and nothing else.
"""

VIEW_AUDIT_TRAIL = "audit.view_auditrecord"

ROLES: dict[str, list[str]] = {
    "Auditors": [VIEW_AUDIT_TRAIL],
}
