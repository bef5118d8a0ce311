from django.contrib import admin

from connectors.audit.models import AuditRecord


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only (no add, change or delete here; /audit/ is the page to read it)."""

    list_display = ("at", "actor", "via", "action", "object_type", "object_repr", "client_ip")
    list_filter = ("via", "action", "object_type")
    search_fields = ("actor", "object_id", "object_repr")
    date_hierarchy = None
    show_full_result_count = False  # no COUNT(*) over millions of records

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
