from django.contrib import admin

from connectors.models import ApiKey, Connector
from connectors.pages.forms import ConnectorForm


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    # The form's API key field is a password input that is never filled in: write-only, blank keeps the key.
    form = ConnectorForm
    list_display = ("name", "provider", "api_host", "default_model", "created_at")
    list_filter = ("provider",)
    search_fields = ("name", "api_url", "id")
    readonly_fields = ("id", "connector_type_id", "key_status", "pki_status", "created_at", "updated_at", "created_by")
    fields = (
        "id", "name", "connector_type_id", "provider", "api_url", "default_model", "organization_id", "project_id",
        "headers", "context_window_length", "temperature", "timeout_ms", "enable_native_function_calling",
        "verification_mode", "api_key", "key_status", "certificate_file", "private_key_file", "ca_file", "remove_pki",
        "pki_status", "created_at", "updated_at", "created_by",
    )

    @admin.display(description="Stored key")
    def key_status(self, obj: Connector) -> str:
        return "•••••••• (encrypted)" if obj.has_api_key else "none"

    @admin.display(description="Stored certificates")
    def pki_status(self, obj: Connector) -> str:
        # PKI material is write-only like the key: only whether it is there is shown.
        return "•••••••• (encrypted)" if obj.encrypted_certificate_data else "none"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__username", "prefix")
    readonly_fields = ("user", "name", "prefix", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def has_add_permission(self, request) -> bool:
        return False  # keys are created on the account page, where the plaintext is shown once
