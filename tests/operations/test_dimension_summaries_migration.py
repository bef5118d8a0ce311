"""Migration usage/0012: the per-dimension summaries are filled from the rollups already stored, kept exact by
their triggers from then on, and gone (tables and triggers) when the migration is reversed. On SQLite and
PostgreSQL alike."""

from datetime import UTC, datetime

import pytest

from tests.dashboards.test_rollups import assert_summaries_match_rollups, dimension_tables
from tests.helpers.events import CONNECTOR, record_mix
from tests.helpers.migrations import migrate_to
from usage.dashboards.queries import connector_usage
from usage.models import UsageDimensionDaily
from usage.ranges import parse_range

BEFORE = ("usage", "0011_drop_event_space_connector")
START = datetime(2025, 3, 1, 20, tzinfo=UTC)


@pytest.fixture
def rollups_before_the_migration(transactional_db):
    record_mix(START, hours=30, per_hour=4, seed=3)
    expected = dimension_tables()
    migrate_to(BEFORE)
    yield expected
    migrate_to(None, "usage")


def test_the_summaries_are_filled_from_the_stored_rollups_and_kept_filled(rollups_before_the_migration):
    migrate_to(None, "usage")

    assert dimension_tables() == rollups_before_the_migration
    assert_summaries_match_rollups()
    record_mix(START, hours=5, per_hour=3, seed=4)  # the triggers, from the migration on
    assert_summaries_match_rollups()
    report = connector_usage(CONNECTOR, parse_range({"from": "2025-03-01T20:00", "to": "2025-03-03T02:00"}))
    assert sum(row.sums.requests for row in report.by_user) == report.totals.requests > 0


def test_backwards_the_tables_and_their_triggers_are_gone(rollups_before_the_migration):
    from django.db import connection

    apps = migrate_to(BEFORE)
    assert "usage_usagedimensiondaily" not in connection.introspection.table_names()
    record_mix(START, hours=2, per_hour=2, seed=5)  # a trigger left behind would fail on its missing table
    assert apps.get_model("usage", "UsageRollup").objects.exists()
    migrate_to(None, "usage")
    assert UsageDimensionDaily.objects.exists()
    assert_summaries_match_rollups()
