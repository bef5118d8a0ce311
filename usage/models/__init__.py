"""The event log's models: events (events.py), their hourly rollups (rollups.py) and the trigger-kept summaries of
the rollups (summaries.py). Nothing here imports the recording or the queries: they import these."""

from usage.models.choices import EventSource, Outcome, UsageSource
from usage.models.events import ExecutionEvent
from usage.models.rollups import (
    LATENCY_BIN_BOUNDS_MS,
    LATENCY_BIN_COUNT,
    NO_API_KEY,
    ROLLUP_KEY_FIELDS,
    ROLLUP_SUM_FIELDS,
    UsageRollup,
    latency_bin_condition,
    latency_bin_field,
    model_is,
    rollup_model,
    unpriced_condition,
)
from usage.models.summaries import (
    DAILY_KEY_FIELDS,
    DAILY_SUM_FIELDS,
    DIMENSION_DAILY_KEY_FIELDS,
    DIMENSION_KEY_FIELDS,
    DIMENSIONS,
    HOURLY_TOTAL_KEY_FIELDS,
    UsageDailyRollup,
    UsageDimensionDaily,
    UsageDimensionHourly,
    UsageHourlyTotal,
)

__all__ = [
    "DAILY_KEY_FIELDS",
    "DAILY_SUM_FIELDS",
    "DIMENSIONS",
    "DIMENSION_DAILY_KEY_FIELDS",
    "DIMENSION_KEY_FIELDS",
    "HOURLY_TOTAL_KEY_FIELDS",
    "LATENCY_BIN_BOUNDS_MS",
    "LATENCY_BIN_COUNT",
    "NO_API_KEY",
    "ROLLUP_KEY_FIELDS",
    "ROLLUP_SUM_FIELDS",
    "EventSource",
    "ExecutionEvent",
    "Outcome",
    "UsageDailyRollup",
    "UsageDimensionDaily",
    "UsageDimensionHourly",
    "UsageHourlyTotal",
    "UsageRollup",
    "UsageSource",
    "latency_bin_condition",
    "latency_bin_field",
    "model_is",
    "rollup_model",
    "unpriced_condition",
]
