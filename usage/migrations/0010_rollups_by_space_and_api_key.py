"""The rollups and their summaries keyed by space and API key (README "Spaces", "How the dashboards stay fast").

A preconfigured connector is in every space, and a space's dashboard of it must count that space's calls only;
the per-API-key breakdown is read from the rollups instead of every raw event of the range. UsageRollup and
UsageDailyRollup get ``space_id`` and ``api_key_id`` (0: no key), UsageHourlyTotal ``space_id``, all in their unique
keys; UsageDailyRollup also sums the estimated and unpriced requests, which the per-key breakdown reports.

Existing rollup rows get the space of their connector: a stored connector's, or for a deleted one the space of its
newest event (a preconfigured connector's rows stay in ``default``, as do those whose events were all pruned); and
"no key". ``manage.py rebuild_usage_rollups`` re-derives the per-space and per-key sums from the events still kept.
The summaries are refilled from the rollups under their new keys. Column lists are spelled out so that this
migration does not change when the models do.

Servers of the previous version cannot record once this has run (their upsert names the old key): stop them
before migrating.
"""

import importlib

from django.db import migrations, models

_summaries = importlib.import_module("usage.migrations.0002_rollup_summaries")
_with_cost = importlib.import_module("usage.migrations.0004_event_cost")

ROLLUP, HOURLY, DAILY = _summaries.ROLLUP, _summaries.HOURLY, _summaries.DAILY
KEYS = _summaries.Keys(
    rollup=("connector_id", "space_id", "bucket", "model", "user_name", "api_key_id", "outcome"),
    hourly=("connector_id", "space_id", "bucket", "outcome"),
    daily=("connector_id", "space_id", "day", "model", "user_name", "api_key_id", "outcome"),
)
HOURLY_SUMS = _with_cost.HOURLY_SUMS
DAILY_SUMS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_requests", "cost_nanos",
              "unpriced_requests")
# Where the reverse migration gathers each old key's rows before they go back to the default space.
MERGED = "~merged"


def _run(schema_editor, statements):
    for statement in statements:
        schema_editor.execute(statement, params=None)


# The triggers go before the columns are added (SQLite rebuilds a table to add a column, and a trigger naming the
# table would break the rebuild) and come back after, with the new keys.
def drop_triggers(apps, schema_editor):
    _run(schema_editor, _summaries._drop_triggers(schema_editor.connection.vendor))


def create_keyed_triggers(apps, schema_editor):
    _run(schema_editor, _summaries._create_triggers(schema_editor.connection.vendor, HOURLY_SUMS, DAILY_SUMS, keys=KEYS))


def restore_previous_summaries(apps, schema_editor):
    """Backwards, last: the summaries (emptied by merge_spaces_and_keys) refilled under their previous keys, and
    the previous triggers."""
    vendor = schema_editor.connection.vendor
    _run(schema_editor, _summaries._backfill(vendor, HOURLY_SUMS, _with_cost.DAILY_SUMS))
    _run(schema_editor, _summaries._create_triggers(vendor, HOURLY_SUMS, _with_cost.DAILY_SUMS))


def _empty_summaries(schema_editor) -> None:
    _run(schema_editor, [f"DELETE FROM {HOURLY}", f"DELETE FROM {DAILY}"])


def _deleted_connectors_spaces(apps) -> dict[str, str]:
    """The space of each deleted connector that left rollups and events, from its newest event (one indexed row
    each). Preconfigured connectors' events are left out: they are in every space."""
    connector_model = apps.get_model("connectors", "Connector")
    event_model = apps.get_model("usage", "ExecutionEvent")
    hourly_model = apps.get_model("usage", "UsageHourlyTotal")
    stored = set(connector_model.objects.values_list("pk", flat=True))
    spaces = {}
    for connector_id in hourly_model.objects.order_by().values_list("connector_id", flat=True).distinct():
        if connector_id in stored:
            continue
        space_id = (event_model.objects.filter(connector_id=connector_id, connector_is_preconfigured=False)
                    .order_by("-timestamp").values_list("space_id", flat=True).first())
        if space_id not in (None, "default"):
            spaces[connector_id] = space_id
    return spaces


def backfill_spaces(apps, schema_editor):
    connectors = apps.get_model("connectors", "Connector")._meta.db_table
    rollup_model = apps.get_model("usage", "UsageRollup")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {ROLLUP} SET space_id = (SELECT c.space_id FROM {connectors} c WHERE c.id = {ROLLUP}.connector_id) "
            f"WHERE connector_id IN (SELECT id FROM {connectors} WHERE space_id <> 'default')"
        )
    for connector_id, space_id in _deleted_connectors_spaces(apps).items():
        rollup_model.objects.filter(connector_id=connector_id).update(space_id=space_id)
    _empty_summaries(schema_editor)
    _run(schema_editor, _summaries._backfill(schema_editor.connection.vendor, HOURLY_SUMS, DAILY_SUMS, KEYS))


def merge_spaces_and_keys(apps, schema_editor):
    """Backwards: one rollup row per previous key (connector, hour, model, user, outcome), in the default space and
    without an API key, so that the previous unique key holds again; the summaries emptied, to be refilled once
    their previous keys are back (restore_previous_summaries)."""
    previous = ("connector_id", "bucket", "model", "user_name", "outcome")
    columns = ", ".join(KEYS.rollup + HOURLY_SUMS)
    selected = ", ".join(f"'{MERGED}'" if c == "space_id" else "0" if c == "api_key_id" else c for c in KEYS.rollup)
    _run(schema_editor, [
        f"INSERT INTO {ROLLUP} ({columns}) SELECT {selected}, {', '.join(f'SUM({c})' for c in HOURLY_SUMS)} "
        f"FROM {ROLLUP} GROUP BY {', '.join(previous)}",
        f"DELETE FROM {ROLLUP} WHERE space_id <> '{MERGED}'",
        f"UPDATE {ROLLUP} SET space_id = 'default'",
    ])
    _empty_summaries(schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ("connectors", "0003_spaces"),
        ("usage", "0009_partition_events"),
    ]

    operations = [
        migrations.RunPython(drop_triggers, restore_previous_summaries),
        migrations.RemoveConstraint(model_name="usagerollup", name="rollup_key"),
        migrations.RemoveConstraint(model_name="usagehourlytotal", name="hourly_total_key"),
        migrations.RemoveConstraint(model_name="usagedailyrollup", name="daily_rollup_key"),
        migrations.AddField(
            model_name="usagerollup",
            name="space_id",
            field=models.CharField(default="default", max_length=64),
        ),
        migrations.AddField(
            model_name="usagerollup",
            name="api_key_id",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="usagehourlytotal",
            name="space_id",
            field=models.CharField(default="default", max_length=64),
        ),
        migrations.AddField(
            model_name="usagedailyrollup",
            name="space_id",
            field=models.CharField(default="default", max_length=64),
        ),
        migrations.AddField(
            model_name="usagedailyrollup",
            name="api_key_id",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="usagedailyrollup",
            name="estimated_requests",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="usagedailyrollup",
            name="unpriced_requests",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddConstraint(
            model_name="usagerollup",
            constraint=models.UniqueConstraint(fields=list(KEYS.rollup), name="rollup_key"),
        ),
        migrations.AddConstraint(
            model_name="usagehourlytotal",
            constraint=models.UniqueConstraint(fields=list(KEYS.hourly), name="hourly_total_key"),
        ),
        migrations.AddConstraint(
            model_name="usagedailyrollup",
            constraint=models.UniqueConstraint(fields=list(KEYS.daily), name="daily_rollup_key"),
        ),
        migrations.AddIndex(
            model_name="usagerollup",
            index=models.Index(fields=["space_id", "bucket"], name="rollup_space_bucket"),
        ),
        migrations.AddIndex(
            model_name="usagerollup",
            index=models.Index(condition=models.Q(("api_key_id__gt", 0)), fields=["api_key_id", "bucket"],
                               name="rollup_api_key_bucket"),
        ),
        migrations.AddIndex(
            model_name="usagehourlytotal",
            index=models.Index(fields=["space_id", "bucket"], name="hourly_total_space_bucket"),
        ),
        migrations.AddIndex(
            model_name="usagedailyrollup",
            index=models.Index(fields=["space_id", "day"], name="daily_rollup_space_day"),
        ),
        migrations.RunPython(backfill_spaces, merge_spaces_and_keys),
        migrations.RunPython(create_keyed_triggers, drop_triggers),
    ]
