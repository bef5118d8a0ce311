from django.conf import settings
from django.db import models
from django.utils import timezone

# Upper bounds (ms) of the latency histogram bins kept in each rollup row; the last bin is open-ended.
# Percentiles on the dashboard are read from these bins, so they are exact to the bin.
LATENCY_BIN_BOUNDS_MS = (10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000)
LATENCY_BIN_COUNT = len(LATENCY_BIN_BOUNDS_MS) + 1


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class Source(models.TextChoices):
    API = "api", "API (_execute)"
    UI_TEST = "ui_test", "UI test"
    OPENAI_API = "openai_api", "OpenAI-compatible API"


class UsageSource(models.TextChoices):
    PROVIDER = "provider", "Reported by the provider"
    ESTIMATED = "estimated", "Estimated with a tokenizer"
    NONE = "none", "None"


class ExecutionEventManager(models.Manager):
    def record(self, **fields) -> "ExecutionEvent":
        """Write one execution's event and add it to the usage rollups, atomically. The only writer of events."""
        from usage.recording import record_events

        return record_events([ExecutionEvent(**fields)])[0]


class ExecutionEvent(models.Model):
    """One execution of a connector, success or failure: Kibana's `execute` event with what it lacked."""

    timestamp = models.DateTimeField(default=timezone.now, help_text="When the execution started.")
    connector_id = models.CharField(max_length=64)
    connector_name = models.CharField(max_length=255, help_text="The connector's name at the time.")
    connector_is_preconfigured = models.BooleanField(default=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user_name = models.CharField(max_length=150, blank=True, help_text="The user (or API key owner) at the time.")
    source = models.CharField(max_length=16, choices=Source.choices)
    sub_action = models.CharField(max_length=32)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    duration_ms = models.FloatField(default=0)
    upstream_status = models.PositiveSmallIntegerField(null=True, blank=True)
    requested_model = models.CharField(max_length=255, blank=True)
    response_model = models.CharField(max_length=255, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_source = models.CharField(max_length=16, choices=UsageSource.choices, default=UsageSource.NONE)
    error_message = models.TextField(blank=True)
    request_bytes = models.PositiveIntegerField(default=0)
    response_bytes = models.PositiveIntegerField(default=0)

    objects = ExecutionEventManager()

    class Meta:
        ordering = ["-timestamp"]
        default_permissions = ("view",)
        permissions = [("view_usage_dashboard", "Can view token usage dashboards")]
        indexes = [
            # The raw-event CSV export and the admin: one connector, a time range, newest first.
            models.Index(fields=["connector_id", "timestamp"], name="event_connector_time"),
            # prune_usage_events: everything older than a cut-off.
            models.Index(fields=["timestamp"], name="event_time"),
        ]

    def __str__(self) -> str:
        return f"{self.connector_name} {self.sub_action} {self.outcome} at {self.timestamp:%Y-%m-%d %H:%M:%S}"

    @property
    def model(self) -> str:
        return self.response_model or self.requested_model


class UsageRollup(models.Model):
    """Per connector, hour, model, user and outcome: sums of the events, kept up to date as events are recorded.

    The dashboards read only these rows, never raw events. ``manage.py rebuild_usage_rollups`` recomputes them.
    """

    connector_id = models.CharField(max_length=64)
    bucket = models.DateTimeField(help_text="Start of the hour (UTC).")
    model = models.CharField(max_length=255, blank=True)
    user_name = models.CharField(max_length=150, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    estimated_requests = models.BigIntegerField(default=0, help_text="Requests whose counts were estimated.")
    duration_ms_sum = models.FloatField(default=0)

    class Meta:
        default_permissions = ()
        constraints = [
            # The upsert key of usage.recording; also serves the dashboard's "one connector, a time range".
            models.UniqueConstraint(
                fields=["connector_id", "bucket", "model", "user_name", "outcome"], name="rollup_key"
            )
        ]


def latency_bin_field(index: int) -> str:
    return f"latency_bin_{index}"


# One counter column per latency bin (not a JSON list) so that concurrent writers can add to them in SQL.
for _index in range(LATENCY_BIN_COUNT):
    models.BigIntegerField(default=0).contribute_to_class(UsageRollup, latency_bin_field(_index))

# The additive columns of a rollup row, in one place for the recorder, the rebuild and the summaries.
ROLLUP_KEY_FIELDS = ("connector_id", "bucket", "model", "user_name", "outcome")
ROLLUP_SUM_FIELDS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_requests",
    "duration_ms_sum",
) + tuple(latency_bin_field(i) for i in range(LATENCY_BIN_COUNT))


# Trigger-maintained summaries of UsageRollup for long dashboard ranges (see usage/summaries.py). Imported here
# so that Django registers them with the app; at the end because they use the names above.
from usage.summaries import UsageDailyRollup, UsageHourlyTotal  # noqa: E402, F401
