"""End to end in Chromium: a connector admin manages budgets, rate limits, prices, pricing and alert channels; a
user without any role reads "My usage"."""

import datetime as dt

import pytest
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from tests.browser.fixtures import log_in, screenshot
from tests.helpers.events import record
from usage.governance.models import AlertChannel, Budget, ConnectorPricing, ErrorRateRule, Price, RateLimit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_connector_admin_manages_budgets_and_rate_limits(page, live_server, connector_admin, make_connector):
    connector = make_connector(name="Walked", default_model="gpt-4.1")
    log_in(page, live_server, connector_admin)
    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    page.click("[data-governance-panel] >> text=Add a budget")
    page.wait_for_url("**/usage/budgets/new/**")
    assert page.input_value("#id_connector_id") == connector.pk  # prefilled from the connector page
    # The user and API-key scopes are not offered to a connector admin.
    assert page.locator("#id_scope option").all_inner_texts() == ["Connector"]
    page.fill("#id_name", "Walked monthly")
    page.select_option("#id_unit", "cost")
    page.fill("#id_amount", "-3")
    page.fill("#id_time_zone", "Atlantis/Capital")
    page.click("button.primary")
    assert page.locator("[data-field=amount] .field-error").inner_text() == "The amount must be more than zero."
    assert "Unknown time zone" in page.locator("[data-field=time_zone] .field-error").inner_text()
    # Refusing calls is chosen, never assumed: the form says so until one of the two is picked.
    assert "This field is required" in page.locator("[data-field=hard_limit] .field-error").inner_text()
    page.fill("#id_amount", "25")
    page.fill("#id_time_zone", "Europe/Paris")
    page.check("input[name=hard_limit][value=refuse]")
    page.click("button.primary")
    page.wait_for_url("**/usage/budgets/")
    assert "Budget “Walked monthly” created." in page.inner_text(".messages")
    row = page.locator("tr[data-budget]", has_text="Walked monthly")
    assert "0.0000 USD" in row.inner_text() and "of 25.0000 USD" in row.inner_text()
    assert Budget.objects.get(name="Walked monthly").time_zone == "Europe/Paris"

    page.click("text=New rate limit")
    page.select_option("#id_connector_id", connector.pk)
    page.fill("#id_requests_per_minute", "120")
    page.click("button.primary")
    page.wait_for_url("**/usage/budgets/")
    assert "0 of 120 (120 left)" in page.inner_text("table.governance-limits")
    assert RateLimit.objects.get().requests_per_minute == 120

    page.click("tr[data-budget] >> text=Delete")
    page.click("button.danger")
    page.wait_for_url("**/usage/budgets/")
    assert not Budget.objects.exists()
    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    assert "120 left" in page.inner_text("[data-governance-panel]")
    screenshot(page, "governance-connector-panel")
    assert not page.console_errors


def test_a_connector_admin_adds_a_price_version_and_maps_azure_deployments(page, live_server, connector_admin,
                                                                           make_connector):
    connector = make_connector(name="Azure chat", provider="Azure OpenAI",
                               api_url="https://res.openai.azure.com/openai/deployments/chat-prod/chat/completions"
                               "?api-version=2024-10-21")
    # Created here: a transactional test's database is emptied after each test, the shipped prices with it.
    Price.objects.create(model_pattern="gpt-4.1", valid_from=dt.date(2026, 1, 1), input_per_million=2,
                         output_per_million=8)
    log_in(page, live_server, connector_admin)
    page.click("nav >> text=Prices")
    page.wait_for_url("**/usage/prices/")
    page.click("tr:has(code:text-is('gpt-4.1')) >> text=New version")
    assert page.input_value("#id_model_pattern") == "gpt-4.1"
    page.fill("#id_valid_from", "2099-01-01")
    page.fill("#id_input_per_million", "-1")
    page.fill("#id_output_per_million", "4")
    page.click("button.primary")
    assert page.locator("[data-field=input_per_million] .field-error").inner_text() == "A price cannot be negative."
    page.fill("#id_input_per_million", "1")
    page.click("button.primary")
    page.wait_for_url("**/usage/prices/")
    assert Price.objects.filter(model_pattern="gpt-4.1").count() == 2
    assert "Future" in page.locator("tr", has_text="2099-01-01").first.inner_text()

    page.goto(f"{live_server.url}/connectors/{connector.pk}/")
    page.click("[data-governance-panel] >> text=Pricing")
    page.fill("#id_deployment_models", "chat-prod: gpt-4.1-mini")
    page.fill("#id_discount_percent", "15")
    page.click("button.primary")
    assert "Pricing of “Azure chat” saved." in page.inner_text(".messages")
    pricing = ConnectorPricing.objects.get(connector_id=connector.pk)
    assert pricing.deployment_models == {"chat-prod": "gpt-4.1-mini"}
    screenshot(page, "governance-connector-pricing")
    assert not page.console_errors


def test_a_connector_admin_sets_up_alert_channels_and_rules(page, live_server, connector_admin, make_connector):
    connector = make_connector(name="Watched")
    log_in(page, live_server, connector_admin)
    page.click("nav >> text=Alerts")
    page.wait_for_url("**/usage/alerts/")
    assert "No alert has been raised." in page.inner_text("main")
    page.click("text=New channel")
    page.fill("#id_name", "Ops hook")
    page.select_option("#id_kind", "webhook")
    page.fill("#id_target", "https://hooks.example.com/ops")
    page.fill("#id_secret", "whsec-walked")
    page.click("button.primary")
    page.wait_for_url("**/usage/alerts/")
    assert "Yes (secret stored)" in page.inner_text("table.governance-channels")
    assert "whsec-walked" not in page.content()
    assert AlertChannel.objects.get().secret == "whsec-walked"
    # The URL is a secret too: the page shows its scheme and host, the delivery uses it whole.
    assert "https://hooks.example.com/…" in page.inner_text("table.governance-channels")
    assert "hooks.example.com/ops" not in page.content()
    assert AlertChannel.objects.get().target == "https://hooks.example.com/ops"

    page.click("text=New error-rate rule")
    page.select_option("#id_connector_id", connector.pk)
    page.fill("#id_threshold_percent", "150")
    page.click("button.primary")
    assert "less than or equal to 100" in page.inner_text("[data-field=threshold_percent]")
    page.fill("#id_threshold_percent", "20")
    page.click("button.primary")
    page.wait_for_url("**/usage/alerts/")
    assert ErrorRateRule.objects.get().threshold_percent == 20
    assert "20% errors over 15 min" in page.inner_text("main")
    screenshot(page, "governance-alerts")
    assert not page.console_errors


def test_a_user_without_any_role_reads_my_usage(page, live_server, outsider, make_connector):
    connector = make_connector(name="Everyday")
    key, _ = create_api_key(outsider, "notebook")
    record(timezone.now() - dt.timedelta(hours=1), connector_id=connector.pk, user=outsider, user_name="otto",
           prompt_tokens=1200, completion_tokens=300, cost_nanos=4_200_000_000, api_key=key)
    record(timezone.now() - dt.timedelta(days=10), connector_id=connector.pk, user=outsider, user_name="otto",
           prompt_tokens=10, completion_tokens=10, cost_nanos=1_000_000_000)
    Budget.objects.create(scope="user", user=outsider, name="Otto's month", unit="cost", amount=10)
    log_in(page, live_server, outsider)
    page.click("nav >> text=My usage")
    page.wait_for_url("**/usage/me/")
    assert page.inner_text("[data-total=cost]") == "4.2000 USD"
    assert page.inner_text("[data-total=total_tokens]") == "1,500"
    assert "Everyday" in page.inner_text("main") and "notebook" in page.inner_text("main")
    assert "Otto's month" in page.inner_text("table.governance-budgets")
    page.click('[data-range="30d"]')
    page.wait_for_url("**/usage/me/?range=30d")
    assert page.inner_text("[data-total=cost]") == "5.2000 USD"
    screenshot(page, "my-usage")
    assert not page.console_errors
