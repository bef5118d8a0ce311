"""Coarser summaries of UsageRollup, kept exact by database triggers, so that long dashboard ranges stay fast.

UsageRollup has one row per connector, hour, model, user and outcome: at ten million events over 90 days that is
about half a million rows, and summing them takes over a second on a 2-core machine. The dashboards need two
coarser views of the same numbers:

- UsageHourlyTotal: per connector, hour and outcome (two rows an hour), for the series and the totals, in any
  time zone (every zone's hours and days are made of whole UTC hours, give or take half-hour offsets);
- UsageDailyRollup: per connector, UTC day, model, user and outcome, for the per-user and per-model breakdowns
  over whole UTC days (the partial days at the ends of a range are read from UsageRollup).

Triggers on the UsageRollup table (migration 0002) add each inserted, updated or deleted rollup row's change to
both summaries, in the same transaction and with the same upsert-and-add as usage.models.rollups, so the summaries
equal the rollups whatever writes them (recording, rebuild_usage_rollups, a manual fix) without another code
path to keep in step. Nothing else writes these tables.
"""

from django.db import models

from usage.models.choices import Outcome
from usage.models.rollups import LATENCY_BIN_COUNT, latency_bin_field

# The columns UsageDailyRollup sums (UsageHourlyTotal sums all of ROLLUP_SUM_FIELDS; the triggers in migration
# 0002 list the same ones).
DAILY_SUM_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_nanos")


class UsageHourlyTotal(models.Model):
    """UsageRollup summed over models and users: one row per connector, UTC hour and outcome."""

    connector_id = models.CharField(max_length=64)
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
            # The triggers' upsert key; also serves the series and totals: one connector, a time range.
            models.UniqueConstraint(fields=["connector_id", "bucket", "outcome"], name="hourly_total_key")
        ]


for _index in range(LATENCY_BIN_COUNT):
    models.BigIntegerField(default=0).contribute_to_class(UsageHourlyTotal, latency_bin_field(_index))


class UsageDailyRollup(models.Model):
    """UsageRollup summed over the hours of a UTC day: one row per connector, day, model, user and outcome."""

    connector_id = models.CharField(max_length=64)
    day = models.DateTimeField(help_text="Midnight UTC starting the day.")
    model = models.CharField(max_length=255, blank=True)
    user_name = models.CharField(max_length=150, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)

    class Meta:
        app_label = "usage"
        default_permissions = ()
        constraints = [
            # The triggers' upsert key; also serves the breakdowns: one connector, a range of whole days.
            models.UniqueConstraint(fields=["connector_id", "day", "model", "user_name", "outcome"], name="daily_rollup_key")
        ]
