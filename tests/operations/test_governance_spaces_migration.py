"""Migrations governance/0008 and 0009: a rule counts its own space's calls only, so a rule of an API key or a
stored connector made in another space moves to its subject's space (its counter, by the rule's id, keeps what the
period used); and an existing alert takes the space of the rule that raised it. On SQLite and PostgreSQL alike."""

from decimal import Decimal

import pytest
from django.db import connection

from connectors.accounts.api_keys import create_api_key
from connectors.spaces.models import Space
from tests.helpers.migrations import migrate_to
from usage.governance.models import Alert, Budget, ErrorRateRule, RateLimit
from usage.models import ExecutionEvent

BEFORE = ("governance", "0007_alert_channel_target_encrypted")


@pytest.fixture
def before_the_migrations(transactional_db):
    apps = migrate_to(BEFORE)
    yield apps
    migrate_to(None)


def test_rules_move_to_their_subjects_space_and_alerts_take_their_rules_space(before_the_migrations, operator,
                                                                              make_connector):
    apps = before_the_migrations
    marketing = Space.objects.create(id="marketing", name="Marketing")
    key, _ = create_api_key(operator, "ci", space_id="marketing")
    connector = make_connector(name="Campaign bot", space=marketing)
    old_budget, old_limit, old_rule, old_alert = (apps.get_model("governance", name)
                                                  for name in ("Budget", "RateLimit", "ErrorRateRule", "Alert"))
    money = {"name": "b", "amount": Decimal(1)}
    of_key = old_budget.objects.create(scope="api_key", api_key_id=key.pk, **money)
    of_connector = old_limit.objects.create(scope="connector", connector_id=connector.pk, requests_per_minute=5)
    of_user = old_budget.objects.create(scope="user", user_id=operator.pk, **money)
    of_shared = old_budget.objects.create(scope="connector", connector_id="preconfigured-one", **money)
    rule = old_rule.objects.create(space_id="marketing", connector_id="preconfigured-one", threshold_percent=5)
    alerts = {
        "budget": old_alert.objects.create(key=f"budget:{of_key.pk}:2026-12-01:threshold", kind="budget_threshold",
                                           message="m"),
        "rate limit": old_alert.objects.create(key=f"ratelimit:{of_connector.pk}:20261206T10",
                                               kind="rate_limited", connector_id=connector.pk, message="m"),
        "error rate": old_alert.objects.create(key=f"errors:{rule.pk}:123", kind="error_rate",
                                               connector_id="preconfigured-one", message="m"),
        "rule gone, connector kept": old_alert.objects.create(key="budget:999:2026-12-01:reached",
                                                              kind="budget_reached", connector_id=connector.pk,
                                                              message="m"),
        "nothing known": old_alert.objects.create(key="other", kind="error_rate", message="m"),
    }

    migrate_to(None)

    assert Budget.objects.get(pk=of_key.pk).space_id == "marketing"
    assert RateLimit.objects.get(pk=of_connector.pk).space_id == "marketing"
    assert Budget.objects.get(pk=of_user.pk).space_id == "default"
    assert Budget.objects.get(pk=of_shared.pk).space_id == "default"
    assert ErrorRateRule.objects.get(pk=rule.pk).space_id == "marketing"
    spaces = {name: Alert.objects.get(pk=alert.pk).space_id for name, alert in alerts.items()}
    assert spaces == {"budget": "marketing", "rate limit": "marketing", "error rate": "marketing",
                      "rule gone, connector kept": "marketing", "nothing known": "default"}


def test_the_event_table_no_longer_has_the_space_connector_index(transactional_db):
    with connection.cursor() as cursor:
        names = set(connection.introspection.get_constraints(cursor, ExecutionEvent._meta.db_table))
    assert "event_connector_time_id" in names  # the introspection sees the table's indexes
    assert "event_space_connector" not in names
