"""The governance pages, mounted under /usage/ next to the dashboards (README, "Prices, budgets, rate limits and
alerts")."""

from django.urls import path

from usage.governance.pages import views

app_name = "governance"

urlpatterns = [
    path("budgets/", views.budget_list, name="budgets"),
    path("budgets/new/", views.BudgetCreate.as_view(), name="budget_new"),
    path("budgets/<int:pk>/edit/", views.BudgetEdit.as_view(), name="budget_edit"),
    path("budgets/<int:pk>/delete/", views.BudgetDelete.as_view(), name="budget_delete"),
    path("rate-limits/new/", views.RateLimitCreate.as_view(), name="rate_limit_new"),
    path("rate-limits/<int:pk>/edit/", views.RateLimitEdit.as_view(), name="rate_limit_edit"),
    path("rate-limits/<int:pk>/delete/", views.RateLimitDelete.as_view(), name="rate_limit_delete"),
    path("prices/", views.price_list, name="prices"),
    path("prices/new/", views.PriceCreate.as_view(), name="price_new"),
    path("prices/<int:pk>/edit/", views.PriceEdit.as_view(), name="price_edit"),
    path("prices/<int:pk>/delete/", views.PriceDelete.as_view(), name="price_delete"),
    path("prices/connectors/<str:connector_id>/", views.connector_pricing, name="connector_pricing"),
    path("alerts/", views.alert_list, name="alerts"),
    path("alerts/channels/new/", views.ChannelCreate.as_view(), name="channel_new"),
    path("alerts/channels/<int:pk>/edit/", views.ChannelEdit.as_view(), name="channel_edit"),
    path("alerts/channels/<int:pk>/delete/", views.ChannelDelete.as_view(), name="channel_delete"),
    path("alerts/error-rules/new/", views.ErrorRuleCreate.as_view(), name="error_rule_new"),
    path("alerts/error-rules/<int:pk>/edit/", views.ErrorRuleEdit.as_view(), name="error_rule_edit"),
    path("alerts/error-rules/<int:pk>/delete/", views.ErrorRuleDelete.as_view(), name="error_rule_delete"),
]
