"""Per-hour sums of the events (UsageRollup) and how a batch of events is added to them.

Rollups are updated with an upsert that adds in SQL (``INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x``),
so concurrent writers on PostgreSQL and SQLite never lose a count.
"""

import functools
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable

from django.db import connection, models

from usage.models.choices import Outcome, UsageSource
from usage.models.json_rows import json_rows, rows_from_json

# Upper bounds (ms) of the latency histogram bins kept in each rollup row; the last bin is open-ended.
# Percentiles on the dashboard are read from these bins, so they are exact to the bin.
LATENCY_BIN_BOUNDS_MS = (10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000)
LATENCY_BIN_COUNT = len(LATENCY_BIN_BOUNDS_MS) + 1
ROLLUP_ROWS_PER_STATEMENT = 200
# The api_key_id of calls made without an API key (ApiKey ids start at 1).
NO_API_KEY = 0
# The key of a rollup row (its unique constraint, the upsert's conflict target), in one place for the recorder, the
# rebuild and the summaries.
ROLLUP_KEY_FIELDS = ("connector_id", "space_id", "bucket", "model", "user_name", "api_key_id", "outcome")


class UsageRollup(models.Model):
    """Per connector, space, hour, model, user, API key and outcome: sums of the events, kept up to date as events
    are recorded.

    The dashboards read only these rows, never raw events. ``manage.py rebuild_usage_rollups`` recomputes them.
    """

    connector_id = models.CharField(max_length=64)
    # The space the calls were made in (ExecutionEvent.space_id): a preconfigured connector is in every space, and
    # each space counts only its own calls of it. Plain text, as on the event: the sums outlive the space.
    space_id = models.CharField(max_length=64, default="default")
    bucket = models.DateTimeField(help_text="Start of the hour (UTC).")
    model = models.CharField(max_length=255, blank=True)
    user_name = models.CharField(max_length=150, blank=True)
    # The id of the API key the calls were made with, NO_API_KEY (0) for none. Neither NULL (NULL never equals NULL
    # in a unique key, so every keyless call would insert a row instead of adding to one) nor a foreign key (the
    # sums of a deleted key stay, as the rest of the rollups outlive what they count).
    api_key_id = models.BigIntegerField(default=NO_API_KEY)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    estimated_requests = models.BigIntegerField(default=0, help_text="Requests whose counts were estimated.")
    duration_ms_sum = models.FloatField(default=0)
    cost_nanos = models.BigIntegerField(default=0, help_text="Sum of the priced events' costs (nanos).")
    unpriced_requests = models.BigIntegerField(default=0, help_text="Requests with tokens but no price.")

    class Meta:
        app_label = "usage"
        default_permissions = ()
        constraints = [
            # The upsert key of add_to_rollups; also serves a connector's dashboard: one connector in one space, a
            # time range.
            models.UniqueConstraint(fields=list(ROLLUP_KEY_FIELDS), name="rollup_key")
        ]
        indexes = [
            # The space's dashboard (/usage/, connector None in usage/dashboards/queries.py): every connector of
            # one space, the hours of a range (the ends of a long range, or every hour of a sliced one).
            models.Index(fields=["space_id", "bucket"], name="rollup_space_bucket"),
            # A dashboard sliced by API key (UsageSlice.api_key): one key's hours in a range. Partial: calls
            # without a key, most of them from the browser, add no entry.
            models.Index(fields=["api_key_id", "bucket"], name="rollup_api_key_bucket",
                         condition=models.Q(api_key_id__gt=NO_API_KEY)),
        ]


def latency_bin_field(index: int) -> str:
    return f"latency_bin_{index}"


# One counter column per latency bin (not a JSON list) so that concurrent writers can add to them in SQL.
for _index in range(LATENCY_BIN_COUNT):
    models.BigIntegerField(default=0).contribute_to_class(UsageRollup, latency_bin_field(_index))

# The additive columns of a rollup row, in one place for the recorder, the rebuild and the summaries.
ROLLUP_SUM_FIELDS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_requests",
    "duration_ms_sum",
    "cost_nanos",
    "unpriced_requests",
) + tuple(latency_bin_field(i) for i in range(LATENCY_BIN_COUNT))
_KEY_COLUMNS = tuple(UsageRollup._meta.get_field(name).column for name in ROLLUP_KEY_FIELDS)
_SUM_COLUMNS = tuple(UsageRollup._meta.get_field(name).column for name in ROLLUP_SUM_FIELDS)
_BUCKET_FIELD = UsageRollup._meta.get_field("bucket")
_BUCKET_AT = ROLLUP_KEY_FIELDS.index("bucket")


def latency_bin(duration_ms: float) -> int:
    return bisect_left(LATENCY_BIN_BOUNDS_MS, duration_ms)


# The same mapping in SQL, for queries that sum events as the rollups would (usage/operations/maintenance.py's rebuild,
# the Logs tab's model filter in usage/dashboards/event_filters.py).

def latency_bin_condition(index: int) -> models.Q:
    """The events ``latency_bin`` puts in bin ``index`` (bisect_left): bounds[i-1] < duration <= bounds[i]."""
    condition = models.Q()
    if index > 0:
        condition &= models.Q(duration_ms__gt=LATENCY_BIN_BOUNDS_MS[index - 1])
    if index < len(LATENCY_BIN_BOUNDS_MS):
        condition &= models.Q(duration_ms__lte=LATENCY_BIN_BOUNDS_MS[index])
    return condition


def rollup_model() -> models.Case:
    """An event's model as the rollups key it (``ExecutionEvent.model``): the reported one, else the requested one."""
    return models.Case(models.When(response_model="", then=models.F("requested_model")),
                       default=models.F("response_model"), output_field=models.CharField())


def model_is(model: str) -> models.Q:
    """The events whose model, as the rollups key it, is ``model``."""
    return models.Q(response_model=model) | models.Q(response_model="", requested_model=model)


def unpriced_condition() -> models.Q:
    """The events counted in ``unpriced_requests``: tokens used, no price applied."""
    return models.Q(cost_nanos__isnull=True) & (models.Q(prompt_tokens__gt=0) | models.Q(completion_tokens__gt=0))


def rollup_key(event) -> tuple:
    """The event's rollup row, in ROLLUP_KEY_FIELDS order."""
    bucket = event.timestamp.replace(minute=0, second=0, microsecond=0)
    return (event.connector_id, event.space_id, bucket, event.model[:255], event.user_name,
            event.api_key_id or NO_API_KEY, event.outcome)


def rollup_deltas(events: Iterable) -> dict[tuple, dict[str, float]]:
    """Sum events into per-rollup-row increments."""
    deltas: dict[tuple, dict[str, float]] = defaultdict(lambda: dict.fromkeys(ROLLUP_SUM_FIELDS, 0))
    for event in events:
        row = deltas[rollup_key(event)]
        row["requests"] += 1
        row["prompt_tokens"] += event.prompt_tokens
        row["completion_tokens"] += event.completion_tokens
        row["total_tokens"] += event.total_tokens
        row["cached_tokens"] += event.cached_tokens or 0
        row["reasoning_tokens"] += event.reasoning_tokens or 0
        row["estimated_requests"] += 1 if event.usage_source == UsageSource.ESTIMATED else 0
        row["duration_ms_sum"] += event.duration_ms
        if event.cost_nanos is not None:
            row["cost_nanos"] += event.cost_nanos
        elif event.prompt_tokens or event.completion_tokens:
            row["unpriced_requests"] += 1
        row[latency_bin_field(latency_bin(event.duration_ms))] += 1
    return deltas


def sorted_deltas(deltas: dict[tuple, dict[str, float]]) -> list[tuple[tuple, dict[str, float]]]:
    # Sorted so that concurrent batches take row locks in the same order (no deadlocks on PostgreSQL).
    return sorted(deltas.items(), key=lambda item: tuple(str(part) for part in item[0]))


def rollup_upsert(items: list[tuple[tuple, dict[str, float]]]) -> tuple[str, list]:
    """The statement adding ``items`` (rollup key, increments) to the rollup rows, creating missing ones: rows in
    ``VALUES`` (SQLite; the event writer gives PostgreSQL them as JSON, ``rollup_rows_json``)."""
    params: list = []
    for key, sums in items:
        params += _key_for_database(key, connection)
        params += [sums[field] for field in ROLLUP_SUM_FIELDS]
    return rollup_upsert_sql(connection.vendor, len(items)), params


def rollup_rows_json(items: list[tuple[tuple, dict[str, float]]], db) -> str:
    """PostgreSQL: the parameter of ``rollup_upsert_sql(vendor, None)`` for ``items``: their rows as one JSON
    document (usage/models/json_rows.py), so one statement text for any number of rows."""
    return json_rows([dict(zip(_KEY_COLUMNS, _key_for_database(key, db), strict=True))
                      | dict(zip(_SUM_COLUMNS, (sums[field] for field in ROLLUP_SUM_FIELDS), strict=True))
                      for key, sums in items])


def _key_for_database(key: tuple, db) -> list:
    """A rollup key (``rollup_key``) as the database takes it: the bucket as DateTimeField stores it."""
    values = list(key)
    values[_BUCKET_AT] = _BUCKET_FIELD.get_db_prep_value(values[_BUCKET_AT], db)
    return values


@functools.lru_cache(maxsize=64)
def rollup_upsert_sql(vendor: str, rows: int | None) -> str:
    """The upsert's text for ``rows`` rows in VALUES, or (None) rows as JSON (``rollup_rows_json``), built once per
    shape, the table aliased ``r`` to keep it short. Its columns are ROLLUP_KEY_FIELDS and ROLLUP_SUM_FIELDS: a key
    column added there is in the statement."""
    quote = connection.ops.quote_name
    columns = _KEY_COLUMNS + _SUM_COLUMNS
    if rows is None:
        source = rows_from_json(UsageRollup, columns, connection)
    else:
        source = "VALUES " + ",".join(["(" + ",".join(["%s"] * len(columns)) + ")"] * rows)
    table = quote(UsageRollup._meta.db_table)
    quoted = [quote(column) for column in columns]
    keys = quoted[: len(ROLLUP_KEY_FIELDS)]
    updates = ",".join(f"{q}=r.{q}+excluded.{q}" for q in quoted[len(keys) :])
    return (
        f"INSERT INTO {table} AS r ({','.join(quoted)}) {source} "
        f"ON CONFLICT ({','.join(keys)}) DO UPDATE SET {updates}"
    )


def add_to_rollups(deltas: dict[tuple, dict[str, float]]) -> None:
    """Add increments to the rollup rows, creating missing rows. Safe under concurrent writers."""
    items = sorted_deltas(deltas)
    with connection.cursor() as cursor:
        for start in range(0, len(items), ROLLUP_ROWS_PER_STATEMENT):
            cursor.execute(*rollup_upsert(items[start : start + ROLLUP_ROWS_PER_STATEMENT]))
