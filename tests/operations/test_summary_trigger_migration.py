"""Migration usage/0013 (PostgreSQL): the totals' and the dimensions' summary triggers become one trigger per event
that skips an empty transition table. The summaries stay exact through inserts, updates and deletes of rollups,
forwards and backwards."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.models import F

from tests.dashboards.test_rollups import assert_summaries_match_rollups
from tests.helpers.events import record_mix
from tests.helpers.migrations import migrate_to
from usage.models import UsageRollup

BEFORE = ("usage", "0012_breakdowns_by_dimension")
START = datetime(2025, 3, 1, 20, tzinfo=UTC)

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql",
                                reason="PostgreSQL's statement-level triggers; SQLite's are row-level, unchanged; "
                                       "CI runs the suite on PostgreSQL too")


def rollup_triggers() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'usage_usagerollup'::regclass "
                       "AND NOT tgisinternal")
        return {name for (name,) in cursor.fetchall()}


@pytest.fixture
def at_0012(transactional_db):
    migrate_to(BEFORE)
    yield
    migrate_to(None, "usage")


def test_one_trigger_per_event_keeps_every_summary_exact(at_0012):
    record_mix(START, hours=6, per_hour=3, seed=7)  # under the split triggers
    migrate_to(None, "usage")

    assert rollup_triggers() == {"usage_rollup_insert_summaries", "usage_rollup_update_summaries",
                                 "usage_rollup_delete_summaries"}
    record_mix(START, hours=8, per_hour=3, seed=8)  # updates of existing rollup rows, and new ones
    assert_summaries_match_rollups()
    UsageRollup.objects.filter(bucket__lt=datetime(2025, 3, 1, 23, tzinfo=UTC)).delete()
    assert_summaries_match_rollups()
    UsageRollup.objects.update(prompt_tokens=F("prompt_tokens") + 1)  # no row inserted: the INSERT trigger's are none
    assert_summaries_match_rollups()


def test_backwards_the_triggers_are_split_again_and_exact(at_0012):
    migrate_to(None, "usage")
    migrate_to(BEFORE)

    assert rollup_triggers() == {f"usage_rollup_{event}_{kind}" for event in ("insert", "update", "delete")
                                 for kind in ("summaries", "dimensions")}
    record_mix(START, hours=4, per_hour=2, seed=9)
    assert_summaries_match_rollups()
