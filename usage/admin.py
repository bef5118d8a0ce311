from django.contrib import admin

from usage.dashboards.logs_views import api_key_label
from usage.models import ExecutionEvent


@admin.register(ExecutionEvent)
class ExecutionEventAdmin(admin.ModelAdmin):
    """Read-only: events are written only by usage.recording.writer."""

    list_display = (
        "timestamp", "connector_name", "user_name", "source", "sub_action", "outcome", "duration",
        "upstream_status", "response_model", "total_tokens", "usage_source",
    )
    list_filter = ("outcome", "source", "sub_action", "usage_source", "connector_name", "timestamp")
    search_fields = ("connector_id", "connector_name", "user_name", "requested_model", "response_model", "error_message")
    date_hierarchy = "timestamp"
    list_select_related = False
    show_full_result_count = False  # counting millions of rows on every page view is slow on PostgreSQL

    # Shown by the methods below, in words: the fields' own labels and values read "Api key: None".
    REWORDED = {"duration_ms": "duration", "api_key": "key", "usage_source": "usage"}

    def get_readonly_fields(self, request, obj=None):
        return [self.REWORDED.get(field.name, field.name) for field in self.model._meta.fields]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    @admin.display(description="API key")
    def key(self, event: ExecutionEvent) -> str:
        if event.api_key_id is None:
            return "— (none: the browser or a password)"
        # As the Logs tab names it; no foreign key holds the id (migration 0014), so the key may be gone.
        return api_key_label(event.api_key_id)

    @admin.display(description="Usage source")
    def usage(self, event: ExecutionEvent) -> str:
        if event.usage_source == "none":
            return "Not reported (the answer carried no usage)"
        return event.get_usage_source_display()

    @admin.display(description="duration (ms)", ordering="duration_ms")
    def duration(self, event: ExecutionEvent) -> str:
        # Milliseconds with one decimal, as on the Logs tab and in events.csv (the float carries noise).
        return f"{event.duration_ms:.1f}"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
