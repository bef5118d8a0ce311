"""Coarser summaries of UsageRollup, kept exact by database triggers, so that long dashboard ranges stay fast.

UsageRollup has one row per connector, space, hour, model, user, API key and outcome: at ten million events over
90 days that is about half a million rows, and summing them takes over a second on a 2-core machine. The
dashboards need two coarser views of the same numbers:

- UsageHourlyTotal: per connector, space, hour and outcome (two rows an hour for a connector used in one space),
  for the series and the totals, in any time zone (every zone's hours and days are made of whole UTC hours, give
  or take half-hour offsets); nothing that reads it is sliced by user, model or API key;
- UsageDailyRollup: per connector, space, UTC day, model, user, API key and outcome, for the breakdowns of a view
  sliced by user, model or API key over whole UTC days (the partial days at the ends of a range are read from
  UsageRollup);
- UsageDimensionHourly and UsageDimensionDaily: per connector, space, dimension (user, model or API key), one
  value of it, UTC hour or day, and outcome, for the unsliced per-user, per-model and per-API-key breakdowns. A day
  of a busy connector has one UsageDailyRollup row per user, model and API key met together (about 800 at 100
  million events), but here only one per user, plus one per model and one per key (about 76): a 90-day breakdown
  reads a few thousand rows whatever the traffic, and the partial days at the ends of a range in a time zone other
  than UTC are read from the hourly table, not from UsageRollup.

Triggers on the UsageRollup table (migrations 0002, 0010, 0012) add each inserted, updated or deleted rollup row's change
to every summary, in the same transaction and with the same upsert-and-add as usage.models.rollups, so the summaries
equal the rollups whatever writes them (recording, rebuild_usage_rollups, a manual fix) without another code
path to keep in step. Nothing else writes these tables.
"""

from django.db import models

from usage.models.choices import Outcome
from usage.models.rollups import LATENCY_BIN_COUNT, NO_API_KEY, latency_bin_field

# The keys of the two summaries ("day" is the rollup's bucket truncated to the UTC day), and the columns
# UsageDailyRollup sums (UsageHourlyTotal sums all of ROLLUP_SUM_FIELDS); the triggers of migration 0010 list the
# same ones. The daily rows keep the estimated and unpriced counts for the per-API-key breakdown, whose cost says
# both (the usage API's by_api_key).
HOURLY_TOTAL_KEY_FIELDS = ("connector_id", "space_id", "bucket", "outcome")
DAILY_KEY_FIELDS = ("connector_id", "space_id", "day", "model", "user_name", "api_key_id", "outcome")
DAILY_SUM_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_requests",
                    "cost_nanos", "unpriced_requests")


class UsageHourlyTotal(models.Model):
    """UsageRollup summed over models, users and API keys: one row per connector, space, UTC hour and outcome."""

    connector_id = models.CharField(max_length=64)
    space_id = models.CharField(max_length=64, default="default")
    bucket = models.DateTimeField(help_text="Start of the hour (UTC).")
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    estimated_requests = models.BigIntegerField(default=0)
    duration_ms_sum = models.FloatField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)

    class Meta:
        app_label = "usage"
        default_permissions = ()
        constraints = [
            # The triggers' upsert key; also serves a connector's series and totals: one connector in one space, a
            # time range.
            models.UniqueConstraint(fields=list(HOURLY_TOTAL_KEY_FIELDS), name="hourly_total_key")
        ]
        indexes = [
            # The space's dashboard and the connector list's last 24 hours (usage/dashboards/connector_figures.py):
            # every connector of one space, a time range.
            models.Index(fields=["space_id", "bucket"], name="hourly_total_space_bucket"),
        ]


for _index in range(LATENCY_BIN_COUNT):
    models.BigIntegerField(default=0).contribute_to_class(UsageHourlyTotal, latency_bin_field(_index))


class UsageDailyRollup(models.Model):
    """UsageRollup summed over the hours of a UTC day: one row per connector, space, day, model, user, API key and
    outcome."""

    connector_id = models.CharField(max_length=64)
    space_id = models.CharField(max_length=64, default="default")
    day = models.DateTimeField(help_text="Midnight UTC starting the day.")
    model = models.CharField(max_length=255, blank=True)
    user_name = models.CharField(max_length=150, blank=True)
    api_key_id = models.BigIntegerField(default=NO_API_KEY)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    estimated_requests = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)

    class Meta:
        app_label = "usage"
        default_permissions = ()
        constraints = [
            # The triggers' upsert key; also serves a connector's breakdowns (by user, model and API key): one
            # connector in one space, a range of whole days.
            models.UniqueConstraint(fields=list(DAILY_KEY_FIELDS), name="daily_rollup_key")
        ]
        indexes = [
            # The space's dashboard's breakdowns: every connector of one space, a range of whole days.
            models.Index(fields=["space_id", "day"], name="daily_rollup_space_day"),
        ]


# The breakdowns' dimensions: the UsageRollup column each one sums by. An API key's value is its id as text
# (NO_API_KEY, "0": calls made without one).
DIMENSIONS = ("user_name", "model", "api_key_id")
DIMENSION_KEY_FIELDS = ("connector_id", "space_id", "dimension", "bucket", "value", "outcome")
DIMENSION_DAILY_KEY_FIELDS = ("connector_id", "space_id", "dimension", "day", "value", "outcome")


class DimensionSums(models.Model):
    connector_id = models.CharField(max_length=64)
    space_id = models.CharField(max_length=64, default="default")
    dimension = models.CharField(max_length=16, choices=[(name, name) for name in DIMENSIONS])
    value = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    estimated_requests = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class UsageDimensionHourly(DimensionSums):
    """UsageRollup summed per dimension: one row per connector, space, dimension, value, UTC hour and outcome."""

    bucket = models.DateTimeField(help_text="Start of the hour (UTC).")

    class Meta:
        app_label = "usage"
        default_permissions = ()
        constraints = [
            # The triggers' upsert key; also serves one connector's breakdown by one dimension over a time range.
            models.UniqueConstraint(fields=list(DIMENSION_KEY_FIELDS), name="dimension_hourly_key")
        ]
        indexes = [
            # The space's dashboard: every connector of one space, one dimension, a time range.
            models.Index(fields=["space_id", "dimension", "bucket"], name="dimension_hourly_space"),
        ]


class UsageDimensionDaily(DimensionSums):
    """UsageRollup summed per dimension over the hours of a UTC day: one row per connector, space, dimension,
    value, day and outcome."""

    day = models.DateTimeField(help_text="Midnight UTC starting the day.")

    class Meta:
        app_label = "usage"
        default_permissions = ()
        constraints = [
            models.UniqueConstraint(fields=list(DIMENSION_DAILY_KEY_FIELDS), name="dimension_daily_key")
        ]
        indexes = [
            models.Index(fields=["space_id", "dimension", "day"], name="dimension_daily_space"),
        ]
