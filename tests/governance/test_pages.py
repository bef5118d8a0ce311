"""The governance pages (usage/governance/pages/views.py): budgets and rate limits with their consumption, prices and
per-connector pricing, alerts and channels, and who may do what on each; "My usage" is in test_my_usage.py."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from usage.governance.enforcement.admission import budget_counter_key, rate_limit_counter_keys
from usage.governance.enforcement.counters import counter_store
from usage.governance.models import (
    Alert,
    AlertChannel,
    AlertDelivery,
    Budget,
    ConnectorPricing,
    ErrorRateRule,
    Price,
    RateLimit,
)
from usage.governance.pages.forms import SUPERUSERS_ONLY

pytestmark = pytest.mark.django_db

PERSONAS = ["admin", "connector_admin", "operator", "analyst", "outsider"]
MANAGERS = {"admin", "connector_admin"}


@pytest.fixture
def rules(make_connector, admin_user):
    """One of each governed object, so that every edit and delete URL has something to act on."""
    connector = make_connector(name="Governed", default_model="gpt-4.1")
    budget = Budget.objects.create(scope="connector", connector_id=connector.pk, name="Monthly", period="month",
                                   unit="cost", amount=Decimal("100"))
    limit = RateLimit.objects.create(scope="connector", connector_id=connector.pk, requests_per_minute=60)
    price = Price.objects.create(model_pattern="house-model", valid_from=dt.date(2026, 1, 1),
                                 input_per_million=Decimal("1"), output_per_million=Decimal("2"))
    channel = AlertChannel.objects.create(name="Ops mail", kind="email", target="ops@example.com")
    rule = ErrorRateRule.objects.create(connector_id=connector.pk, threshold_percent=50)
    return {"connector": connector, "budget": budget, "limit": limit, "price": price, "channel": channel, "rule": rule}


def budget_form(connector_id: str = "", **fields) -> dict:
    form = {"name": "Team budget", "scope": "connector", "connector_id": connector_id, "period": "month",
            "time_zone": "Europe/Paris", "unit": "tokens", "amount": "1000000", "soft_threshold_percent": "80",
            "hard_limit": "on", "enabled": "on"}
    form.update(fields)
    return form


def forms_for(rules) -> dict:
    connector_id = rules["connector"].pk
    return {
        "budget": budget_form(connector_id),
        "limit": {"scope": "connector", "connector_id": connector_id, "requests_per_minute": "10", "enabled": "on"},
        "price": {"model_pattern": "gpt-9*", "valid_from": "2026-12-01", "input_per_million": "1.5",
                  "output_per_million": "6", "currency": "USD", "connector_id": "", "source": "test"},
        "pricing": {"discount_percent": "10", "deployment_models": "chat-prod: gpt-4.1"},
        "channel": {"name": "Hook", "kind": "webhook", "target": "https://hooks.example.com/x", "enabled": "on",
                    "secret": "s3cret-signing-key"},
        "rule": {"connector_id": connector_id, "threshold_percent": "25", "window_minutes": "15",
                 "min_requests": "10", "enabled": "on"},
    }


# (name, method, path, form key or None, who may): every protected URL of the governance pages.
URLS = [
    ("budgets", "GET", "/usage/budgets/", None),
    ("budget new form", "GET", "/usage/budgets/new/", None),
    ("budget new", "POST", "/usage/budgets/new/", "budget"),
    ("budget edit form", "GET", "/usage/budgets/{budget}/edit/", None),
    ("budget edit", "POST", "/usage/budgets/{budget}/edit/", "budget"),
    ("budget delete form", "GET", "/usage/budgets/{budget}/delete/", None),
    ("budget delete", "POST", "/usage/budgets/{budget}/delete/", None),
    ("rate limit new form", "GET", "/usage/rate-limits/new/", None),
    ("rate limit new", "POST", "/usage/rate-limits/new/", "limit"),
    ("rate limit edit", "POST", "/usage/rate-limits/{limit}/edit/", "limit"),
    ("rate limit delete", "POST", "/usage/rate-limits/{limit}/delete/", None),
    ("prices", "GET", "/usage/prices/", None),
    ("price new", "POST", "/usage/prices/new/", "price"),
    ("price edit form", "GET", "/usage/prices/{price}/edit/", None),
    ("price edit", "POST", "/usage/prices/{price}/edit/", "price"),
    ("price delete", "POST", "/usage/prices/{price}/delete/", None),
    ("connector pricing", "GET", "/usage/prices/connectors/{connector}/", None),
    ("connector pricing save", "POST", "/usage/prices/connectors/{connector}/", "pricing"),
    ("alerts", "GET", "/usage/alerts/", None),
    ("channel new", "POST", "/usage/alerts/channels/new/", "channel"),
    ("channel edit", "POST", "/usage/alerts/channels/{channel}/edit/", "channel"),
    ("channel delete", "POST", "/usage/alerts/channels/{channel}/delete/", None),
    ("error rule new", "POST", "/usage/alerts/error-rules/new/", "rule"),
    ("error rule edit", "POST", "/usage/alerts/error-rules/{rule}/edit/", "rule"),
    ("error rule delete", "POST", "/usage/alerts/error-rules/{rule}/delete/", None),
]


def resolve(path: str, rules) -> str:
    return path.format(**{name: obj.pk for name, obj in rules.items()})


def call(client, method, path, form_key, rules):
    url = resolve(path, rules)
    if method == "GET":
        return client.get(url)
    return client.post(url, forms_for(rules)[form_key] if form_key else {})


@pytest.mark.parametrize("name, method, path, form_key", URLS, ids=[u[0] for u in URLS])
@pytest.mark.parametrize("persona", PERSONAS)
def test_each_governance_url_for_each_persona(client, personas, rules, name, method, path, form_key, persona):
    client.force_login(personas[persona])
    response = call(client, method, path, form_key, rules)
    if persona in MANAGERS:
        assert response.status_code == (200 if method == "GET" else 302), (name, persona, response.content[:2000])
    else:
        assert response.status_code == 403, (name, persona)


@pytest.mark.parametrize("name, method, path, form_key", URLS, ids=[u[0] for u in URLS])
def test_anonymous_users_are_sent_to_login_from_governance_urls(client, rules, name, method, path, form_key):
    response = call(client, method, path, form_key, rules)
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert Budget.objects.count() == 1 and Price.objects.filter(model_pattern="gpt-9*").count() == 0


def test_a_connector_admin_creates_a_connector_budget(client, connector_admin, rules):
    client.force_login(connector_admin)
    response = client.post("/usage/budgets/new/", budget_form(rules["connector"].pk), follow=True)
    budget = Budget.objects.get(name="Team budget")
    assert (budget.scope, budget.connector_id, budget.time_zone, budget.amount) == (
        "connector", rules["connector"].pk, "Europe/Paris", Decimal("1000000"))
    assert "Budget “Team budget” created." in response.content.decode()


def test_a_space_budget_is_created_and_starts_from_what_the_space_used_in_its_period(client, admin_user, rules):
    from tests.helpers.events import record
    from usage.governance.pages.consumption import budget_statuses

    record(timezone.now(), connector_id=rules["connector"].pk, prompt_tokens=300, completion_tokens=20)
    record(timezone.now(), connector_id=rules["connector"].pk, prompt_tokens=5000, space_id="elsewhere")
    client.force_login(admin_user)
    response = client.post("/usage/budgets/new/", budget_form(scope="space"), follow=True)
    assert "Budget “Team budget” created." in response.content.decode()
    budget = Budget.objects.get(name="Team budget")
    assert (budget.scope, budget.space_id) == ("space", "default")
    assert budget_statuses([budget])[0].used == 320  # the default space's call only


# -- user and API-key scopes: superusers only ---------------------------------------------------------------------


def test_a_connector_admin_cannot_set_a_budget_for_a_user(client, connector_admin, operator, rules):
    client.force_login(connector_admin)
    form = client.get("/usage/budgets/new/").content.decode()
    assert 'value="user"' not in form and 'value="api_key"' not in form  # not even offered
    response = client.post("/usage/budgets/new/", budget_form(scope="user", user=str(operator.pk)))
    assert response.status_code == 200
    assert SUPERUSERS_ONLY in response.content.decode()
    assert not Budget.objects.filter(scope="user").exists()


def test_a_connector_admin_cannot_set_a_rate_limit_for_an_api_key(client, connector_admin, operator, rules):
    key, _ = create_api_key(operator, "ci")
    client.force_login(connector_admin)
    response = client.post("/usage/rate-limits/new/", {"scope": "api_key", "api_key": str(key.pk),
                                                       "requests_per_minute": "5", "enabled": "on"})
    assert SUPERUSERS_ONLY in response.content.decode()
    assert not RateLimit.objects.filter(scope="api_key").exists()


def test_a_connector_admin_cannot_edit_or_delete_a_users_budget(client, connector_admin, operator, rules):
    budget = Budget.objects.create(scope="user", user=operator, name="Olivia's", unit="tokens", amount=100)
    client.force_login(connector_admin)
    assert client.get(f"/usage/budgets/{budget.pk}/edit/").status_code == 403
    assert client.post(f"/usage/budgets/{budget.pk}/edit/", budget_form(rules["connector"].pk)).status_code == 403
    assert client.post(f"/usage/budgets/{budget.pk}/delete/").status_code == 403
    assert Budget.objects.get(pk=budget.pk).scope == "user"
    # ... and is not offered the links.
    assert f"/usage/budgets/{budget.pk}/edit/" not in client.get("/usage/budgets/").content.decode()


def test_a_superuser_sets_budgets_and_limits_for_users_and_keys(client, admin_user, operator, rules):
    key, _ = create_api_key(operator, "ci")
    client.force_login(admin_user)
    response = client.post("/usage/budgets/new/", budget_form(scope="user", user=str(operator.pk),
                                                               connector_id=rules["connector"].pk))
    assert response.status_code == 302
    budget = Budget.objects.get(scope="user")
    # The connector chosen before switching the scope is dropped, not an error.
    assert (budget.user, budget.connector_id) == (operator, "")
    response = client.post("/usage/rate-limits/new/", {"scope": "api_key", "api_key": str(key.pk),
                                                       "tokens_per_minute": "5000", "enabled": "on"})
    assert response.status_code == 302
    assert RateLimit.objects.get(scope="api_key").api_key == key


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, field, message", [
    ({"amount": "-5"}, "amount", "The amount must be more than zero."),
    ({"amount": "0"}, "amount", "The amount must be more than zero."),
    ({"time_zone": "Mars/Olympus"}, "time_zone", "Unknown time zone 'Mars/Olympus'"),
    ({"amount": "10.5"}, "amount", "A token budget is a whole number of tokens."),
    ({"connector_id": ""}, "connector_id", "Choose the connector this rule counts."),
    ({"scope": "user", "user": ""}, "user", "Required for this scope."),
])
def test_the_budget_form_refuses_bad_input_with_a_clear_message(client, admin_user, rules, fields, field, message):
    client.force_login(admin_user)
    response = client.post("/usage/budgets/new/", {**budget_form(rules["connector"].pk), **fields})
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert any(message in error for error in errors.get(field, [])), errors
    assert Budget.objects.count() == 1


def test_a_cost_budget_without_a_price_is_saved_and_says_so(client, connector_admin, make_connector):
    connector = make_connector(name="Local", provider="Other", api_url="http://localhost:11434/v1/chat/completions",
                               default_model="llama3.2")
    client.force_login(connector_admin)
    response = client.post("/usage/budgets/new/", budget_form(connector.pk, unit="cost", amount="50"), follow=True)
    assert Budget.objects.filter(connector_id=connector.pk, unit="cost").exists()
    html = response.content.decode()
    assert "No price applies to &#x27;llama3.2&#x27;" in html and "add nothing to this cost budget" in html


def test_a_cost_budget_with_a_price_says_nothing_more(client, connector_admin, rules):
    client.force_login(connector_admin)
    response = client.post("/usage/budgets/new/", budget_form(rules["connector"].pk, unit="cost", amount="50"),
                           follow=True)
    assert "No price applies" not in response.content.decode()


@pytest.mark.parametrize("fields, field, message", [
    ({"requests_per_minute": "-1"}, "requests_per_minute", "Ensure this value is greater than or equal to 0."),
    ({"requests_per_minute": "0"}, "requests_per_minute", "A limit of zero would refuse everything"),
    ({"requests_per_minute": ""}, "__all__", "Set requests per minute, tokens per minute, or both."),
])
def test_the_rate_limit_form_refuses_bad_input(client, connector_admin, rules, fields, field, message):
    client.force_login(connector_admin)
    form = {"scope": "connector", "connector_id": rules["connector"].pk, "requests_per_minute": "10", **fields}
    response = client.post("/usage/rate-limits/new/", form)
    assert response.status_code == 200
    assert any(message in error for error in response.context["form"].errors.get(field, []))
    assert RateLimit.objects.count() == 1


@pytest.mark.parametrize("fields, field, message", [
    ({"input_per_million": "-1"}, "input_per_million", "A price cannot be negative."),
    ({"cached_input_per_million": "-0.5"}, "cached_input_per_million", "A price cannot be negative."),
    ({"currency": "EUR"}, "currency", "Costs are summed in one currency, USD"),
    ({"model_pattern": "   "}, "model_pattern", "This field is required."),
    ({"valid_from": "yesterday"}, "valid_from", "Enter a valid date."),
])
def test_the_price_form_refuses_bad_input(client, connector_admin, rules, fields, field, message):
    client.force_login(connector_admin)
    response = client.post("/usage/prices/new/", {**forms_for(rules)["price"], **fields})
    assert response.status_code == 200
    assert any(message in error for error in response.context["form"].errors.get(field, [])), \
        response.context["form"].errors
    assert not Price.objects.filter(model_pattern="gpt-9*").exists()


def test_the_connector_pricing_form_refuses_a_bad_deployment_map_and_discount(client, connector_admin, rules):
    client.force_login(connector_admin)
    url = f"/usage/prices/connectors/{rules['connector'].pk}/"
    response = client.post(url, {"discount_percent": "120", "deployment_models": "chat-prod gpt-4o"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "A discount is between 0 and 100 %." in html
    assert "Line 1: write each entry as &#x27;deployment: model&#x27;." in html
    assert not ConnectorPricing.objects.exists()


def test_the_connector_pricing_form_saves_discount_and_deployments(client, connector_admin, rules):
    client.force_login(connector_admin)
    url = f"/usage/prices/connectors/{rules['connector'].pk}/"
    client.post(url, {"discount_percent": "12.5", "deployment_models": "chat-prod: gpt-4.1\n\nchat-mini: gpt-4.1-mini"})
    pricing = ConnectorPricing.objects.get(connector_id=rules["connector"].pk)
    assert pricing.discount_percent == Decimal("12.5")
    assert pricing.deployment_models == {"chat-prod": "gpt-4.1", "chat-mini": "gpt-4.1-mini"}
    assert "chat-prod: gpt-4.1" in client.get(url).content.decode()


def test_the_connector_pricing_of_an_unknown_connector_is_404(client, connector_admin):
    client.force_login(connector_admin)
    assert client.get("/usage/prices/connectors/no-such-connector/").status_code == 404


def test_an_email_channel_refuses_a_secret_and_a_bad_address(client, connector_admin, rules):
    client.force_login(connector_admin)
    response = client.post("/usage/alerts/channels/new/", {"name": "Mail", "kind": "email", "target": "not-an-address",
                                                            "secret": "x"})
    errors = response.context["form"].errors
    assert "'not-an-address' is not an email address." in errors["target"][0] or \
        "Email channels are not signed" in errors["secret"][0]
    assert AlertChannel.objects.count() == 1


# -- what the pages show ------------------------------------------------------------------------------------------


def test_the_webhook_secret_is_write_only(client, connector_admin, rules):
    client.force_login(connector_admin)
    client.post("/usage/alerts/channels/new/", forms_for(rules)["channel"])
    channel = AlertChannel.objects.get(name="Hook")
    assert channel.secret == "s3cret-signing-key" and "s3cret" not in channel.secret_encrypted
    for url in ("/usage/alerts/", f"/usage/alerts/channels/{channel.pk}/edit/"):
        html = client.get(url).content.decode()
        assert "s3cret-signing-key" not in html
    assert "a secret is stored. Leave blank to keep it" in client.get(
        f"/usage/alerts/channels/{channel.pk}/edit/").content.decode()
    # Saving without typing it again keeps it.
    client.post(f"/usage/alerts/channels/{channel.pk}/edit/", {**forms_for(rules)["channel"], "secret": "",
                                                                "name": "Hook 2"})
    channel.refresh_from_db()
    assert (channel.name, channel.secret) == ("Hook 2", "s3cret-signing-key")


def test_the_budgets_page_shows_consumption_what_is_left_and_when_it_resets(client, connector_admin, rules):
    budget, limit = rules["budget"], rules["limit"]
    now = timezone.now()
    key, _, end = budget_counter_key(budget, now)
    rpm_key, _, _ = rate_limit_counter_keys(limit, now)
    store = counter_store()
    store.add_now([(key, 25_500_000_000, end), (rpm_key, 7, end)])  # 25.50 USD spent; 7 requests this minute
    client.force_login(connector_admin)
    html = client.get("/usage/budgets/").content.decode()
    assert "25.5000 USD" in html and "74.5000 USD" in html and "of 100.0000 USD" in html
    assert end.strftime("%Y-%m-%d %H:%M") in html
    assert "7 of 60 (53 left)" in html


def test_a_used_up_hard_budget_says_it_refuses(client, connector_admin, rules):
    budget = rules["budget"]
    key, _, end = budget_counter_key(budget, timezone.now())
    counter_store().add_now([(key, budget.limit_units, end)])
    client.force_login(connector_admin)
    html = client.get("/usage/budgets/").content.decode()
    assert 'data-state="exhausted"' in html and "Used up: refusing" in html


def test_the_connector_page_shows_its_budgets_with_consumption(client, personas, rules):
    budget, connector = rules["budget"], rules["connector"]
    key, _, end = budget_counter_key(budget, timezone.now())
    counter_store().add_now([(key, 1_000_000_000, end)])
    client.force_login(personas["connector_admin"])
    html = client.get(f"/connectors/{connector.pk}/").content.decode()
    assert "data-governance-panel" in html and "Monthly" in html and "1.0000 USD" in html
    assert f"/usage/prices/connectors/{connector.pk}/" in html
    # An operator may use the connector but not see governance.
    client.force_login(personas["operator"])
    assert "data-governance-panel" not in client.get(f"/connectors/{connector.pk}/").content.decode()


def test_the_prices_page_marks_current_past_and_future_versions(client, connector_admin):
    for day, price in ((dt.date(2025, 1, 1), "3"), (dt.date(2026, 1, 1), "2"), (dt.date(2099, 1, 1), "1")):
        Price.objects.create(model_pattern="versioned-model", valid_from=day, input_per_million=Decimal(price),
                             output_per_million=Decimal(price))
    client.force_login(connector_admin)
    html = client.get("/usage/prices/").content.decode()
    rows = [html.index(f"<td>{day}</td>") for day in ("2099-01-01", "2026-01-01", "2025-01-01")]
    assert rows == sorted(rows)  # newest version first
    section = html[html.index("versioned-model"):]
    assert section.index("Future") < section.index("In force") < section.index("Past")
    # The shipped list prices are there too, with where they were read.
    assert "gpt-4.1" in html


def test_adding_a_price_version_prefills_the_model(client, connector_admin, rules):
    client.force_login(connector_admin)
    form = client.get("/usage/prices/new/?model=gpt-4.1").context["form"]
    assert form.initial["model_pattern"] == "gpt-4.1"


def test_the_alerts_page_lists_alerts_newest_first_with_each_delivery(client, connector_admin, rules):
    channel = rules["channel"]
    older = Alert.objects.create(key="a1", kind="budget_threshold", message="Budget Monthly at 80 %")
    newer = Alert.objects.create(key="a2", kind="error_rate", message="Connector Governed: 60% failed")
    Alert.objects.filter(pk=older.pk).update(raised_at=timezone.now() - dt.timedelta(hours=1))
    AlertDelivery.objects.create(alert=older, channel=channel, status="sent", attempts=1, next_attempt_at=timezone.now())
    AlertDelivery.objects.create(alert=newer, channel=channel, status="pending", attempts=2,
                                 next_attempt_at=timezone.now(), last_error="SMTPConnectError: refused")
    client.force_login(connector_admin)
    html = client.get("/usage/alerts/").content.decode()
    assert html.index("60% failed") < html.index("at 80 %")
    assert "Sent, 1 attempt" in html and "Pending, 2 attempts" in html
    assert "Last error: SMTPConnectError: refused" in html


def test_nav_links_follow_the_capabilities(client, personas):
    client.force_login(personas["connector_admin"])
    html = client.get("/usage/me/").content.decode()
    assert all(link in html for link in ('href="/usage/budgets/"', 'href="/usage/prices/"', 'href="/usage/alerts/"'))
    client.force_login(personas["outsider"])
    html = client.get("/usage/me/").content.decode()
    assert 'href="/usage/me/"' in html
    assert not any(link in html for link in ('href="/usage/budgets/"', 'href="/usage/prices/"', 'href="/usage/alerts/"'))


def test_the_connector_pricing_page_lists_its_negotiated_prices_with_their_state(client, connector_admin, rules):
    connector = rules["connector"]
    Price.objects.create(model_pattern="gpt-4.1", connector_id=connector.pk, valid_from=dt.date(2026, 1, 1),
                         input_per_million=Decimal("1.5"), output_per_million=Decimal("6"))
    Price.objects.create(model_pattern="gpt-4.1", connector_id="another", valid_from=dt.date(2026, 1, 1),
                         input_per_million=Decimal("0.1"), output_per_million=Decimal("0.1"))
    client.force_login(connector_admin)
    html = client.get(f"/usage/prices/connectors/{connector.pk}/").content.decode()
    assert "1.500000" in html and "In force" in html and "0.100000" not in html and "Past" not in html


def test_a_budgets_completion_allowance_is_set_in_its_form_and_shown_with_it(client, connector_admin, rules):
    client.force_login(connector_admin)
    form = client.get("/usage/budgets/new/").content.decode()
    assert 'name="completion_allowance"' in form and 'value="4096"' in form
    assert "Completion tokens reserved for a call that sets no max_tokens" in form
    client.post("/usage/budgets/new/", {**budget_form(rules["connector"].pk), "completion_allowance": "16384"})
    budget = Budget.objects.get(name="Team budget")
    assert budget.completion_allowance == 16384
    page = client.get("/usage/budgets/").content.decode()
    assert "Reserves 16,384 tokens of completion for a call without max_tokens" in page
    refused = client.post(f"/usage/budgets/{budget.pk}/edit/",
                          {**budget_form(rules["connector"].pk), "completion_allowance": "-1"})
    assert refused.status_code == 200 and "greater than or equal to 0" in refused.content.decode()
    client.post(f"/usage/budgets/{budget.pk}/edit/", {**budget_form(rules["connector"].pk), "completion_allowance": ""})
    assert Budget.objects.get(pk=budget.pk).completion_allowance == 4096  # left empty: the default
