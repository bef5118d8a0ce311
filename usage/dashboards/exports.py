"""CSV exports: the aggregated series of a range, and the raw events of a range streamed row by row."""

import csv
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

from usage.dashboards.event_filters import EventFilters
from usage.dashboards.queries import RAW_EVENT_COLUMNS, UsageReport, araw_events, raw_events
from usage.formatting import currency, nanos_to_amount
from usage.models import UsageSource
from usage.ranges import UsageRange, iso

SERIES_COLUMNS = (
    "bucket",
    "requests",
    "failures",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "estimated_requests",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "cost",
    "currency",
    "cost_estimated",
    "unpriced_requests",
)
# The raw-event CSV names the cost column by what it holds, a decimal amount of USAGE_CURRENCY, not nanos.
RAW_EVENT_HEADER = tuple(
    "cost" if name == "cost_nanos" else name for name in RAW_EVENT_COLUMNS
) + ("currency", "cost_estimated")
_COST_INDEX = RAW_EVENT_COLUMNS.index("cost_nanos")
_USAGE_SOURCE_INDEX = RAW_EVENT_COLUMNS.index("usage_source")
# A cell starting with one of these is run as a formula by spreadsheet programs (CSV injection); user names,
# model names and upstream error messages come from outside, so such cells get a leading apostrophe.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can format one row at a time."""

    def write(self, value: str) -> str:
        return value


def _safe(value):
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def series_rows(report: UsageReport) -> Iterator[list]:
    yield list(SERIES_COLUMNS)
    for point in report.series:
        sums = point.sums
        yield [
            iso(point.bucket, report.range.tz),
            sums.requests,
            sums.failures,
            sums.prompt_tokens,
            sums.completion_tokens,
            sums.total_tokens,
            sums.cached_tokens,
            sums.reasoning_tokens,
            sums.estimated_requests,
            _ms(sums.p50_ms),
            _ms(sums.p95_ms),
            _ms(sums.p99_ms),
            _amount(sums.cost_nanos),
            currency(),
            "true" if sums.cost_is_estimated else "false",
            sums.unpriced_requests,
        ]


def series_csv(report: UsageReport) -> str:
    writer = csv.writer(_Echo())
    return "".join(writer.writerow(row) for row in series_rows(report))


def _amount(nanos: int | None) -> str:
    """Exact, to the nano: a spreadsheet sums these without the rounding of a 4-decimal display."""
    return "" if nanos is None else str(nanos_to_amount(nanos, places=9))


_DURATION_COLUMN = RAW_EVENT_COLUMNS.index("duration_ms")


def _event_row(row: tuple, usage_range: UsageRange) -> list:
    cells = [iso(value, usage_range.tz) if isinstance(value, datetime) else _safe(value) for value in row]
    # Milliseconds with one decimal, as everywhere else (the float holds sub-microsecond noise).
    cells[_DURATION_COLUMN] = _ms(row[_DURATION_COLUMN])
    nanos = row[_COST_INDEX]
    cells[_COST_INDEX] = _amount(nanos)
    estimated = nanos is not None and row[_USAGE_SOURCE_INDEX] == UsageSource.ESTIMATED
    return cells + [currency(), "true" if estimated else "false"]


def raw_events_csv(connector_id: str, usage_range: UsageRange, filters: EventFilters | None = None) -> Iterator[str]:
    """The range's raw events as CSV lines, read from the database in chunks as the lines are sent."""
    writer = csv.writer(_Echo())
    yield writer.writerow(RAW_EVENT_HEADER)
    for row in raw_events(connector_id, usage_range, filters):
        yield writer.writerow(_event_row(row, usage_range))


async def araw_events_csv(
    connector_id: str, usage_range: UsageRange, filters: EventFilters | None = None
) -> AsyncIterator[str]:
    """``raw_events_csv`` for ASGI servers (Django reads a synchronous iterator whole before sending it there)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(RAW_EVENT_HEADER)
    async for row in araw_events(connector_id, usage_range, filters):
        yield writer.writerow(_event_row(row, usage_range))


def export_filename(kind: str, connector_id: str, usage_range: UsageRange) -> str:
    start = usage_range.local(usage_range.start).strftime("%Y%m%dT%H%M")
    end = usage_range.local(usage_range.end).strftime("%Y%m%dT%H%M")
    safe_id = "".join(ch for ch in connector_id if ch.isalnum() or ch in "-_.")
    return f"usage-{kind}-{safe_id}-{start}-{end}.csv"
