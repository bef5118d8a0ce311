"""Links from a dashboard's figures to the calls behind them: each chart point and table row leads to the Logs tab
(or, on the overview, to the overview narrowed the same way) with the matching range, time zone and filters.

A time bucket becomes a custom range of exactly that hour or day, in the viewer's zone; a user, model or API key
row becomes that filter, on top of the dashboard's own slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.urls import reverse
from django.utils.http import urlencode

from usage.dashboards.queries import BreakdownRow, SeriesPoint, UsageSlice
from usage.ranges import HOUR, UsageRange, local_midnight

LOCAL_MINUTE = "%Y-%m-%dT%H:%M"


@dataclass
class Timeline:
    """A series across every connector, for the overview's chart of cost over time (charts.cost_over_time reads
    ``series`` and ``range``, as of a connector's report)."""

    series: list[SeriesPoint]
    range: UsageRange


def bucket_range(usage_range: UsageRange, bucket: datetime) -> dict[str, str]:
    """The query parameters of a custom range covering one bucket of ``usage_range``."""
    local = usage_range.local(bucket)
    end = local + timedelta(hours=1) if usage_range.bucket == HOUR else local_midnight(
        local.date() + timedelta(days=1), usage_range.tz)
    return {"range": "custom", "from": local.strftime(LOCAL_MINUTE),
            "to": usage_range.local(end).strftime(LOCAL_MINUTE), "tz": usage_range.tz_name}


class DrillDown:
    """URLs for one page: ``connector_id`` None is the overview (links stay on it); else that connector's logs.

    A 90-day chart links each of its days three times (every call, successes, failures): the path is reversed once
    and each bucket's range and the page's slice are encoded once, the filters appended to them (docs/PERFORMANCE.md,
    "Usage dashboard")."""

    def __init__(self, usage_range: UsageRange, usage_slice: UsageSlice, connector_id: str | None = None):
        self.range = usage_range
        self.slice = usage_slice
        self.connector_id = connector_id
        self._path = reverse("usage:overview") if connector_id is None else reverse("connector_logs",
                                                                                     args=[connector_id])
        self._slice_params = usage_slice.query_params()
        self._bucket_queries: dict[datetime, str] = {}

    def _url(self, range_params: dict[str, str], filters: dict[str, str]) -> str:
        return f"{self._path}?{urlencode({**range_params, **self._slice_params, **filters})}"

    def _whole_range(self) -> dict[str, str]:
        return {**self.range.query_params(), "tz": self.range.tz_name}

    def bucket(self, bucket: datetime, **filters: str) -> str:
        if filters.keys() & self._slice_params.keys():
            return self._url(bucket_range(self.range, bucket), filters)  # a filter replaces the slice's own value
        query = self._bucket_queries.get(bucket)
        if query is None:
            query = self._bucket_queries[bucket] = urlencode({**bucket_range(self.range, bucket),
                                                              **self._slice_params})
        return f"{self._path}?{query}&{urlencode(filters)}" if filters else f"{self._path}?{query}"

    def row(self, dimension: str, row: BreakdownRow) -> str:
        """A breakdown row's link, or empty for the rows no filter can select (no user, "others")."""
        if row.is_others:
            return ""
        if dimension == "api_key":
            return self._url(self._whole_range(), {"api_key": str(row.key_id)}) if row.key_id else ""
        return self._url(self._whole_range(), {dimension: row.key}) if row.key else ""

    def connector_logs(self, connector_id: str) -> str:
        """An overview row's calls: that connector's Logs tab over the same range and slice."""
        params = {**self._whole_range(), **{k: v for k, v in self.slice.query_params().items() if k != "api_key"}}
        if self.slice.api_key is not None:
            params["api_key"] = str(self.slice.api_key)
        return f"{reverse('connector_logs', args=[connector_id])}?{urlencode(params)}"

    def annotate(self, dimension: str, rows: list[BreakdownRow]) -> list[BreakdownRow]:
        for row in rows:
            row.logs_url = self.row(dimension, row)
        return rows
