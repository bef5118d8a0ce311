"""Budgets, rate limits, error-rate rules and alerts belong to their space (README "Spaces"): a rule made in one space
on a preconfigured connector (in every space) counts, refuses and alerts on that space's calls only, with the counters
in the database and in Redis; its alerts go to that space's channels and page; and the pages that name a space's
connectors read no event to know them."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.spaces.current import current_space_id
from connectors.spaces.models import Space
from tests.helpers.events import record
from tests.helpers.execute import envelope, run_body
from usage.governance import alerts
from usage.governance.enforcement import counters
from usage.governance.enforcement.admission import budget_counter_key, rate_limit_counter_keys
from usage.governance.models import (
    Alert,
    AlertChannel,
    AlertDelivery,
    Budget,
    ConnectorPricing,
    ErrorRateRule,
    Period,
    Price,
    RateLimit,
    Scope,
    Unit,
)
from usage.governance.pages.consumption import recorded_in_period
from usage.models import ExecutionEvent, Outcome
from usage.ranges import ceil_hour, floor_hour

SHARED = "shared-openai"
from tests.environment import redis_test_url  # noqa: E402

REDIS_URL = redis_test_url()
EVENT_TABLE = ExecutionEvent._meta.db_table


@pytest.fixture
def marketing(db):
    return Space.objects.create(id="marketing", name="Marketing")


@pytest.fixture
def shared(actions_config, fake_openai):
    actions_config({"preconfigured": {SHARED: {
        "name": "Shared OpenAI", "actionTypeId": ".gen-ai",
        "config": {"apiProvider": "OpenAI", "apiUrl": fake_openai.url("ok")},
        "secrets": {"apiKey": "sk-preconfigured-SECRET"},
    }}})
    return SHARED


@pytest.fixture(params=["database", "redis"])
def counter_store(request, settings, transactional_db):
    """The server's counters in the database or in Redis (under a prefix of this test's own: the Redis database is
    shared, and rule ids repeat from one test database to the next)."""
    from django.db import connection

    if request.param == "database" and connection.vendor == "sqlite":
        # The tests' shared in-memory SQLite answers "table is locked" at once, instead of waiting, when the event
        # writer and a settlement write together; the settlement is then logged as failed and its estimate stays
        # in the counter (seen in CI, 2026-12-07). A file database, as `make run` has, waits (busy timeout). The
        # PostgreSQL run covers the database counters; test_overshoot.py skips them on SQLite for the same reason.
        pytest.skip("database counters beside the event writer: PostgreSQL's case (CI runs it)")
    counters.reset_counter_store()
    if request.param == "redis":
        settings.REDIS_URL = REDIS_URL
        counters._store = counters.RedisStore(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}")
    else:
        settings.REDIS_URL = ""
    yield counters.counter_store()
    alerts.stop_alert_sender()
    counters.reset_counter_store()


def execute(server, prefix: str, user) -> dict:
    import httpx

    from tests.conftest import basic_auth

    response = httpx.post(f"{server.url}{prefix}/api/actions/connector/{SHARED}/_execute", json=run_body(),
                          headers={"kbn-xsrf": "true", "Authorization": basic_auth(user)}, timeout=30)
    return envelope(response)


def test_a_rule_of_one_space_on_a_preconfigured_connector_ignores_another_spaces_calls(
        counter_store, asgi_live_server, recorded_events, marketing, shared, operator):
    # A call reserves its prompt (about 20 tokens) and the allowance of 50: one fits in 80 tokens, a second does not.
    budget = Budget.objects.create(space=marketing, name="Marketing tokens", scope=Scope.CONNECTOR,
                                   connector_id=SHARED, period=Period.MONTH, unit=Unit.TOKENS, amount=Decimal(80),
                                   completion_allowance=50)
    of_user = Budget.objects.create(space=marketing, name="Operator in marketing", scope=Scope.USER, user=operator,
                                    period=Period.MONTH, unit=Unit.TOKENS, amount=Decimal(10**6))
    limit = RateLimit.objects.create(space=marketing, scope=Scope.CONNECTOR, connector_id=SHARED,
                                     requests_per_minute=1000)

    for _ in range(3):  # the default space's calls of the same connector: none is marketing's to count or refuse
        assert execute(asgi_live_server, "", operator)["status"] == "ok"
    recorded_events.wait_for(3)
    now = timezone.now()
    keys = [budget_counter_key(budget, now)[0], budget_counter_key(of_user, now)[0],
            *rate_limit_counter_keys(limit, now)[:2]]
    assert counter_store.values_now(keys) == {}

    assert execute(asgi_live_server, "/s/marketing", operator)["status"] == "ok"
    refused = execute(asgi_live_server, "/s/marketing", operator)
    assert refused["status"] == "error" and 'Budget "Marketing tokens"' in refused["message"]
    assert execute(asgi_live_server, "", operator)["status"] == "ok"  # the default space is still not refused
    recorded_events.wait_for(6)
    alerts.stop_alert_sender()  # the refusal's alert is written by then
    values = counter_store.values_now([budget_counter_key(budget, timezone.now())[0],
                                       budget_counter_key(of_user, timezone.now())[0]])
    marketing_tokens = sum(ExecutionEvent.objects.filter(space_id="marketing").values_list("total_tokens", flat=True))
    assert marketing_tokens > 0
    assert values == {keys[0]: marketing_tokens, keys[1]: marketing_tokens}
    # The refusal's alert is marketing's.
    assert list(Alert.objects.values_list("space_id", "kind")) == [("marketing", "budget_reached")]


def test_a_budget_catches_up_with_its_own_spaces_calls_only(marketing):
    """Whole hours from the hourly totals, part-hours from the events; a call of another space in neither."""
    now = timezone.now()
    start = now - dt.timedelta(hours=5, minutes=17)
    marketing_tokens = 0
    # Across every hour boundary of the range, and at both ends: the start, the last instant, one before the start.
    moments = [now - dt.timedelta(minutes=minutes) for minutes in range(0, 5 * 60 + 40, 20)]
    moments += [start, now - dt.timedelta(microseconds=1), start - dt.timedelta(microseconds=1)]
    for minutes, at in enumerate(moments):
        record(at, connector_id=SHARED, space_id="default", prompt_tokens=1000, completion_tokens=0)
        record(at, connector_id=SHARED, space_id="marketing", prompt_tokens=minutes + 1, completion_tokens=0)
        record(at, connector_id="other", space_id="marketing", prompt_tokens=7, completion_tokens=0)
        if start <= at < now:
            marketing_tokens += minutes + 1
    of_connector = Budget(space=marketing, scope=Scope.CONNECTOR, connector_id=SHARED, unit=Unit.TOKENS)
    of_space = Budget(space=marketing, scope=Scope.SPACE, unit=Unit.TOKENS)
    in_range = ExecutionEvent.objects.filter(connector_id="other", timestamp__gte=start, timestamp__lt=now).count()
    # Both part-hours hold calls (read from the events), and so do whole hours (read from the hourly totals).
    assert ExecutionEvent.objects.filter(timestamp__gte=start, timestamp__lt=ceil_hour(start)).exists()
    assert ExecutionEvent.objects.filter(timestamp__gte=floor_hour(now), timestamp__lt=now).exists()
    assert recorded_in_period(of_connector, start, now) == marketing_tokens
    assert recorded_in_period(of_space, start, now) == marketing_tokens + 7 * in_range
    # The whole hours come from the hourly totals, which outlive pruned events.
    middle = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
    pruned = ExecutionEvent.objects.filter(space_id="marketing", connector_id=SHARED, timestamp__gte=middle,
                                           timestamp__lt=middle + dt.timedelta(hours=1))
    assert pruned.count() == 3
    pruned.delete()
    assert recorded_in_period(of_connector, start, now) == marketing_tokens


@pytest.mark.django_db(transaction=True)
def test_an_error_rate_rule_counts_its_own_spaces_failures_and_alerts_its_own_channels(client, marketing,
                                                                                       admin_user):
    ErrorRateRule.objects.create(space=marketing, connector_id=SHARED, threshold_percent=50, window_minutes=10,
                                 min_requests=4)
    theirs = AlertChannel.objects.create(name="default's mail", kind="email", target="ops@example.com")
    ours = AlertChannel.objects.create(space=marketing, name="marketing's mail", kind="email",
                                       target="marketing@example.com")
    now = timezone.now()
    failed = {"connector_id": SHARED, "outcome": Outcome.FAILURE, "prompt_tokens": 0, "completion_tokens": 0}
    for _ in range(5):
        record(now - dt.timedelta(minutes=1), space_id="default", **failed)
        record(now - dt.timedelta(minutes=1), connector_id=SHARED, space_id="marketing")
    assert alerts.check_error_rates(now) == 0  # marketing: 0 of 5 failed; the default space's failures are not its

    for _ in range(5):
        record(now - dt.timedelta(minutes=1), space_id="marketing", **failed)
    assert alerts.check_error_rates(now) == 1
    alert = Alert.objects.get()
    assert alert.space_id == "marketing" and "50.0% of 10 executions failed" in alert.message
    assert list(AlertDelivery.objects.values_list("channel", flat=True)) == [ours.pk]
    assert theirs.pk != ours.pk

    client.force_login(admin_user)
    assert [a.pk for a in client.get("/s/marketing/usage/alerts/").context["alerts"]] == [alert.pk]
    assert list(client.get("/usage/alerts/").context["alerts"]) == []


def test_the_pages_that_name_a_spaces_connectors_read_no_event(client, marketing, shared, make_connector,
                                                                admin_user):
    own = make_connector(name="Marketing's", space=marketing)
    elsewhere = make_connector(name="Default's")
    record(timezone.now(), connector_id="deleted-here", space_id="marketing")
    record(timezone.now(), connector_id="deleted-there", space_id="default")
    for connector_id in (own.pk, elsewhere.pk, SHARED, "deleted-here", "deleted-there"):
        Price.objects.create(model_pattern=f"model-of-{connector_id}", connector_id=connector_id,
                             valid_from=dt.date(2026, 1, 1), input_per_million=1, output_per_million=1)
        ConnectorPricing.objects.create(connector_id=connector_id)
    client.force_login(admin_user)

    with CaptureQueriesContext(connection) as queries:
        page = client.get("/s/marketing/usage/prices/")
        alerts_page = client.get("/s/marketing/usage/alerts/")
    assert page.status_code == alerts_page.status_code == 200
    assert {p.connector_id for p in page.context["negotiated"]} == {own.pk, SHARED, "deleted-here"}
    assert {p.connector_id for p in page.context["pricing"]} == {own.pk, SHARED, "deleted-here"}
    assert [q["sql"] for q in queries.captured_queries if EVENT_TABLE in q["sql"]] == []
    assert any("usage_usagehourlytotal" in q["sql"] for q in queries.captured_queries)  # the deleted ones' probe

    # The same ids seen from the default space.
    default_prices = client.get("/usage/prices/").context["negotiated"]
    assert {p.connector_id for p in default_prices} == {elsewhere.pk, SHARED, "deleted-there"}
    # A negotiated price of another space is not found for editing.
    other = Price.objects.get(connector_id=elsewhere.pk)
    assert client.get(f"/s/marketing/usage/prices/{other.pk}/edit/").status_code == 404


def test_connector_ids_answers_for_the_ids_asked_about(marketing, shared, make_connector):
    from usage import space_scope

    own = make_connector(name="Marketing's", space=marketing)
    record(timezone.now(), connector_id="deleted-here", space_id="marketing")
    token = current_space_id.set("marketing")
    try:
        with CaptureQueriesContext(connection) as queries:
            found = space_scope.connector_ids([own.pk, SHARED, "deleted-here", "never-seen", ""])
        assert space_scope.connector_ids([]) == set()
    finally:
        current_space_id.reset(token)
    assert found == {own.pk, SHARED, "deleted-here"}
    assert not any(EVENT_TABLE in q["sql"] for q in queries.captured_queries)


def test_a_key_rule_is_offered_the_keys_of_its_own_space_only(client, marketing, operator, admin_user):
    from connectors.accounts.api_keys import create_api_key

    ours, _ = create_api_key(operator, "marketing ci", space_id="marketing")
    theirs, _ = create_api_key(operator, "default ci")
    client.force_login(admin_user)
    for prefix, offered, refused in (("/s/marketing", ours, theirs), ("", theirs, ours)):
        form = client.get(f"{prefix}/usage/budgets/new/").context["form"]
        assert list(form.fields["api_key"].queryset) == [offered]
        posted = client.post(f"{prefix}/usage/budgets/new/", {
            "name": "Key money", "scope": "api_key", "api_key": refused.pk, "period": "month", "time_zone": "UTC",
            "unit": "tokens", "amount": "100", "soft_threshold_percent": "80", "hard_limit": "refuse",
            "completion_allowance": "10", "enabled": "on"})
        assert posted.status_code == 200 and "api_key" in posted.context["form"].errors
    assert not Budget.objects.exists()
