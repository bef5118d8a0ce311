"""Migration usage/0010: the rollups keyed by space and API key. Existing rollup rows take the space of their
connector (a stored one's, a deleted one's from its newest event; a preconfigured one's stays ``default``) and
"no key"; the summaries are refilled under their new keys; and the migration goes backwards, merging what the
previous keys cannot tell apart. On SQLite and PostgreSQL alike."""

from datetime import UTC, datetime

import pytest

from connectors.spaces.models import Space
from tests.dashboards.test_rollups import assert_summaries_match_rollups
from tests.helpers.events import record
from tests.helpers.migrations import migrate_to
from usage.models import UsageHourlyTotal, UsageRollup

BEFORE = ("usage", "0009_partition_events")
HOUR = datetime(2025, 3, 1, 10, tzinfo=UTC)


@pytest.fixture
def before_the_migration(transactional_db):
    apps = migrate_to(BEFORE)
    yield apps
    migrate_to(None, "usage")


def old_rollup(apps, connector_id: str, **fields):
    values = {"bucket": HOUR, "model": "gpt-4o", "user_name": "alice", "outcome": "success", "requests": 3,
              "prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39, "latency_bin_3": 3}
    return apps.get_model("usage", "UsageRollup").objects.create(connector_id=connector_id, **{**values, **fields})


def old_event(apps, connector_id: str, space_id: str, *, preconfigured: bool = False):
    apps.get_model("usage", "ExecutionEvent").objects.create(
        timestamp=HOUR, connector_id=connector_id, connector_name=connector_id, source="api", sub_action="run",
        outcome="success", space_id=space_id, connector_is_preconfigured=preconfigured)


def test_existing_rollups_take_their_connectors_space_and_no_key(before_the_migration, make_connector):
    apps = before_the_migration
    Space.objects.create(id="marketing", name="Marketing")
    Space.objects.create(id="sales", name="Sales")
    stored = make_connector(name="Campaign bot", space=Space.objects.get(pk="marketing"))
    home = make_connector(name="Default one")
    old_rollup(apps, stored.pk)
    old_rollup(apps, stored.pk, model="o3-mini", outcome="failure", cost_nanos=5)
    old_rollup(apps, home.pk)
    old_rollup(apps, "deleted-in-sales")
    old_event(apps, "deleted-in-sales", "sales")
    old_rollup(apps, "preconfigured-one")
    old_event(apps, "preconfigured-one", "sales", preconfigured=True)  # in every space: stays in default
    old_rollup(apps, "deleted-and-pruned")

    migrate_to(None, "usage")

    spaces = dict(UsageRollup.objects.values_list("connector_id", "space_id").distinct())
    assert spaces == {stored.pk: "marketing", home.pk: "default", "deleted-in-sales": "sales",
                      "preconfigured-one": "default", "deleted-and-pruned": "default"}
    assert set(UsageRollup.objects.values_list("api_key_id", flat=True)) == {0}
    assert dict(UsageHourlyTotal.objects.values_list("connector_id", "space_id")) == spaces
    assert_summaries_match_rollups()
    # Recording goes on under the new keys, into the same rows.
    record(HOUR, connector_id=stored.pk, space_id="marketing", user_name="alice", requested_model="gpt-4o")
    assert UsageRollup.objects.get(connector_id=stored.pk, model="gpt-4o").requests == 4
    assert_summaries_match_rollups()


def test_backwards_it_merges_the_spaces_and_keys_the_previous_keys_cannot_tell_apart(before_the_migration,
                                                                                      django_user_model):
    from connectors.accounts.api_keys import create_api_key

    migrate_to(None, "usage")
    key, _ = create_api_key(django_user_model.objects.create_user("keyholder"), "ci")
    Space.objects.create(id="marketing", name="Marketing")
    for space_id, api_key in (("default", None), ("default", key), ("marketing", None)):
        record(HOUR, connector_id="shared", space_id=space_id, api_key=api_key, prompt_tokens=10, completion_tokens=1)
    assert UsageRollup.objects.count() == 3

    apps = migrate_to(BEFORE)

    rows = list(apps.get_model("usage", "UsageRollup").objects.values("connector_id", "requests", "total_tokens"))
    assert rows == [{"connector_id": "shared", "requests": 3, "total_tokens": 33}]
    hourly = list(apps.get_model("usage", "UsageHourlyTotal").objects.values_list("requests", "total_tokens"))
    daily = list(apps.get_model("usage", "UsageDailyRollup").objects.values_list("requests", "total_tokens"))
    assert hourly == daily == [(3, 33)]
    # The previous triggers are back: a rollup row written now reaches the summaries.
    old_rollup(apps, "later")
    assert apps.get_model("usage", "UsageHourlyTotal").objects.get(connector_id="later").requests == 3
