from django.contrib import admin

from usage.governance.models import ConnectorPricing, Price


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ("model_pattern", "connector_id", "valid_from", "input_per_million", "cached_input_per_million",
                    "output_per_million", "reasoning_per_million", "currency")
    list_filter = ("valid_from", "currency")
    search_fields = ("model_pattern", "connector_id")


@admin.register(ConnectorPricing)
class ConnectorPricingAdmin(admin.ModelAdmin):
    list_display = ("connector_id", "discount_percent")
    search_fields = ("connector_id",)
