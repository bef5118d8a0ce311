"""Reading usage: totals, series, per-user, per-model and per-API-key breakdowns for a range, from rollups only.

Which rollup serves what (all three hold the same sums; usage/models/summaries.py explains the two coarser ones):

- the series, the totals and the overview: UsageHourlyTotal (two rows per connector, space and hour);
- the breakdowns by user, model and API key: UsageDimensionDaily for the whole UTC days inside the range,
  UsageDimensionHourly for the hours before the first and after the last whole day (``dimension_sources``);
- any view sliced by user, model or API key: the same from UsageDailyRollup and UsageRollup (``rollup_sources``),
  which know the three together (and UsageRollup for the series of a sliced view).

Every read is of the current space's rows (``space_id``, README "Spaces"): a preconfigured connector, which is in
every space, shows in each space the calls made there only. Raw events are read where the rollups cannot answer:
the raw-event CSV export (``raw_events``) and, to name a connector that no longer exists, the newest event's
``connector_name`` (one indexed row).
"""

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from itertools import islice

from asgiref.sync import sync_to_async
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDay

from connectors import lookup
from connectors.models import ApiKey, Connector
from connectors.query_params import InvalidQueryParam, text_param, unstorable_character_error
from usage import space_scope
from usage.dashboards.event_filters import EventFilters, InvalidFilter
from usage.models import (
    LATENCY_BIN_BOUNDS_MS,
    LATENCY_BIN_COUNT,
    NO_API_KEY,
    Outcome,
    UsageDailyRollup,
    UsageDimensionDaily,
    UsageDimensionHourly,
    UsageHourlyTotal,
    UsageRollup,
    UsageSource,
    latency_bin_field,
    unpriced_condition,
)
from usage.ranges import DAY, UsageRange

BIN_FIELDS = tuple(latency_bin_field(i) for i in range(LATENCY_BIN_COUNT))
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
DETAIL_FIELDS = ("cached_tokens", "reasoning_tokens", "estimated_requests", "duration_ms_sum")
# Cost (usage/governance/pricing/prices.py): the priced events' sum in nanos, and the requests no price applied to.
COST_FIELDS = ("cost_nanos", "unpriced_requests")
# How many users and models the breakdowns list by name; the rest are summed into one "others" row.
BREAKDOWN_LIMIT = 25


def percentile_ms(bins: list[int], quantile: float) -> float | None:
    """The ``quantile`` (0..1) of durations summarised by latency histogram ``bins``, in milliseconds.

    Exact to the bin: the value is interpolated linearly inside the bin that holds the rank. The last bin is
    open-ended, so a percentile that falls in it is reported as its lower bound (30 s).
    """
    total = sum(bins)
    if not total:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(bins):
        if count and seen + count >= rank:
            lower = LATENCY_BIN_BOUNDS_MS[index - 1] if index else 0
            if index == len(LATENCY_BIN_BOUNDS_MS):
                return float(lower)
            upper = LATENCY_BIN_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return None  # unreachable: the loop always reaches the rank


@dataclass
class UsageSums:
    """Sums over a set of rollup rows: one bucket of the series, one user, one model, or the whole range."""

    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_requests: int = 0
    duration_ms_sum: float = 0.0
    cost_nanos: int = 0
    unpriced_requests: int = 0
    latency_bins: list[int] = field(default_factory=lambda: [0] * LATENCY_BIN_COUNT)

    def add_row(self, row: dict) -> None:
        """Add one row of ``_sum_expressions`` annotations (``sum_<field>`` keys; absent ones are skipped)."""
        for name in ("requests", "failures", *TOKEN_FIELDS, *DETAIL_FIELDS, *COST_FIELDS):
            value = row.get(f"sum_{name}")
            if value:
                setattr(self, name, getattr(self, name) + value)
        if f"sum_{BIN_FIELDS[0]}" in row:
            for index, name in enumerate(BIN_FIELDS):
                self.latency_bins[index] += row[f"sum_{name}"] or 0

    def add(self, other: "UsageSums") -> None:
        for name in ("requests", "failures", *TOKEN_FIELDS, *DETAIL_FIELDS, *COST_FIELDS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_bins = [a + b for a, b in zip(self.latency_bins, other.latency_bins, strict=True)]

    @property
    def successes(self) -> int:
        return self.requests - self.failures

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def mean_duration_ms(self) -> float | None:
        return self.duration_ms_sum / self.requests if self.requests else None

    @property
    def p50_ms(self) -> float | None:
        return percentile_ms(self.latency_bins, 0.50)

    @property
    def p95_ms(self) -> float | None:
        return percentile_ms(self.latency_bins, 0.95)

    @property
    def p99_ms(self) -> float | None:
        return percentile_ms(self.latency_bins, 0.99)

    @property
    def cost_is_estimated(self) -> bool:
        """Some of the cost is of requests whose tokens were estimated (the provider reported none)."""
        return bool(self.estimated_requests and self.cost_nanos)

    def api_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class SeriesPoint:
    bucket: datetime  # aware, in the viewer's time zone
    sums: UsageSums


@dataclass
class BreakdownRow:
    key: str  # the user name or model; "" when the event had none
    sums: UsageSums
    is_others: bool = False
    key_id: int | None = None  # an API key's row: the key's id (its calls' filter on the Logs tab)


@dataclass
class UsageReport:
    """Everything a dashboard shows for one connector and range."""

    connector_id: str
    range: UsageRange
    totals: UsageSums
    series: list[SeriesPoint]
    by_user: list[BreakdownRow]
    by_model: list[BreakdownRow]
    by_api_key: list[BreakdownRow] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return self.totals.requests == 0


def _sum_expressions(fields: tuple[str, ...]) -> dict:
    # Aliased: an annotation may not reuse a model field's name.
    expressions = {f"sum_{name}": Sum(name) for name in fields}
    expressions["sum_failures"] = Sum("requests", filter=Q(outcome=Outcome.FAILURE))
    return expressions


@dataclass(frozen=True)
class UsageSlice:
    """A dashboard's filters, kept in the URL with the range: ``user`` (the user name recorded), ``model`` (the
    model the provider reported, else the requested one, as the rollups key it) and ``api_key`` (an API key's id:
    the calls made with it). Empty: everything. The rollups are keyed by all three."""

    user: str = ""
    model: str = ""
    api_key: int | None = None

    @classmethod
    def from_params(cls, params) -> "UsageSlice":
        """The slice of a query string; InvalidFilter for a value no stored row can hold (a NUL)."""
        raw_key = (params.get("api_key") or "").strip()
        try:
            user, model = text_param(params, "user", max_length=150), text_param(params, "model", max_length=255)
        except InvalidQueryParam as exc:
            raise InvalidFilter(str(exc)) from None
        return cls(
            user=user,
            model=model,
            # Ids only; anything else (a name, a huge number) selects no key rather than failing the page.
            api_key=int(raw_key) if raw_key.isascii() and raw_key.isdigit() and len(raw_key) <= 18 else None,
        )

    def __bool__(self) -> bool:
        return bool(self.user or self.model or self.api_key is not None)

    def query_params(self) -> dict[str, str]:
        params = {name: value for name, value in (("user", self.user), ("model", self.model)) if value}
        if self.api_key is not None:
            params["api_key"] = str(self.api_key)
        return params

    def apply(self, rollups):
        """Narrow a queryset of UsageRollup or UsageDailyRollup (both keyed by user_name, model and api_key_id)."""
        if self.user:
            rollups = rollups.filter(user_name=self.user)
        if self.model:
            rollups = rollups.filter(model=self.model)
        if self.api_key is not None:
            rollups = rollups.filter(api_key_id=self.api_key)
        return rollups


EVERYTHING = UsageSlice()


def of_space(rollups, connector_id: str | None):
    """Narrow a queryset of any rollup table to the current space: one connector's rows, or with ``connector_id``
    None every connector's (the space's dashboard, deleted connectors included)."""
    rollups = rollups.filter(space_id=space_scope.space_id())
    return rollups if connector_id is None else rollups.filter(connector_id=connector_id)


def _hourly_totals(connector_id: str | None, start: datetime, end: datetime, usage_slice: UsageSlice = EVERYTHING):
    """Hourly sums: the per-connector totals, or for a slice the hourly rollups (the only hourly rows that know the
    user, the model and the API key; more rows to read, see README "Dashboards you can slice")."""
    if usage_slice:
        rows = usage_slice.apply(UsageRollup.objects.filter(bucket__gte=start, bucket__lt=end))
    else:
        rows = UsageHourlyTotal.objects.filter(bucket__gte=start, bucket__lt=end)
    return of_space(rows, connector_id)


def usage_series(connector_id: str, usage_range: UsageRange, usage_slice: UsageSlice = EVERYTHING) -> list[SeriesPoint]:
    """One point per bucket of the range, empty buckets included (so charts show gaps as zeros)."""
    rows = _hourly_totals(connector_id, usage_range.start, usage_range.end, usage_slice).order_by()
    if usage_range.bucket == DAY:
        # The viewer's day of each UTC hour, computed by the database: 90 rows instead of 2,160 for 90 days, which
        # matters because turning each row's 27 sums into Python numbers costs more than the query itself.
        rows = rows.annotate(viewer_bucket=TruncDay("bucket", tzinfo=usage_range.tz)).values("viewer_bucket")
    else:
        rows = rows.annotate(viewer_bucket=F("bucket")).values("viewer_bucket")
    rows = rows.annotate(**_sum_expressions(("requests", *TOKEN_FIELDS, *DETAIL_FIELDS, *COST_FIELDS, *BIN_FIELDS)))
    points = {start: SeriesPoint(start, UsageSums()) for start in usage_range.bucket_starts()}
    for row in rows:
        point = points.get(usage_range.bucket_of(row["viewer_bucket"]))
        if point is not None:
            point.sums.add_row(row)
    return list(points.values())


def _utc_midnight_on_or_after(moment: datetime) -> datetime:
    midnight = datetime.combine(moment.astimezone(UTC).date(), time.min, tzinfo=UTC)
    return midnight if midnight == moment else midnight + timedelta(days=1)


def _utc_midnight_on_or_before(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time.min, tzinfo=UTC)


def _covering(usage_range: UsageRange, daily, hourly) -> list:
    """``daily`` rows (keyed by ``day``) for the range's whole UTC days and ``hourly`` ones (by ``bucket``) for the
    hours before the first and after the last: together, the range once."""
    first_day = _utc_midnight_on_or_after(usage_range.start)
    last_day = _utc_midnight_on_or_before(usage_range.end)
    if first_day >= last_day:
        return [hourly.filter(bucket__gte=usage_range.start, bucket__lt=usage_range.end)]
    sources = [daily.filter(day__gte=first_day, day__lt=last_day)]
    if usage_range.start < first_day:
        sources.append(hourly.filter(bucket__gte=usage_range.start, bucket__lt=first_day))
    if last_day < usage_range.end:
        sources.append(hourly.filter(bucket__gte=last_day, bucket__lt=usage_range.end))
    return sources


def rollup_sources(connector_id: str | None, usage_range: UsageRange, usage_slice: UsageSlice = EVERYTHING) -> list:
    """Querysets of UsageDailyRollup and UsageRollup of the current space (both keyed by model, user, API key and
    outcome, with DAILY_SUM_FIELDS) that together cover the range once: daily rows for whole UTC days, hourly rows
    for the rest. ``connector_id`` None: every connector of the space (the overview's cross-connector charts)."""
    hourly = usage_slice.apply(of_space(UsageRollup.objects.all(), connector_id))
    daily = usage_slice.apply(of_space(UsageDailyRollup.objects.all(), connector_id))
    return _covering(usage_range, daily, hourly)


def dimension_sources(connector_id: str | None, usage_range: UsageRange, dimension: str) -> list:
    """As ``rollup_sources``, unsliced, from the summaries of one ``dimension`` (user_name, model or api_key_id):
    one row per value of it and hour or day, the value in ``value``. A 90-day breakdown reads a few thousand rows
    (usage/models/summaries.py)."""
    hourly = of_space(UsageDimensionHourly.objects.filter(dimension=dimension), connector_id)
    daily = of_space(UsageDimensionDaily.objects.filter(dimension=dimension), connector_id)
    return _covering(usage_range, daily, hourly)


def _grouped_sources(connector_id: str | None, usage_range: UsageRange, dimension: str,
                     usage_slice: UsageSlice) -> list:
    """Querysets of one row per value of ``dimension`` (in ``value``) for the range: the dimension's summaries, or
    for a slice the rollups narrowed to it."""
    if usage_slice:
        return [source.order_by().annotate(value=F(dimension)).values("value")
                for source in rollup_sources(connector_id, usage_range, usage_slice)]
    return [source.order_by().values("value") for source in dimension_sources(connector_id, usage_range, dimension)]


def usage_breakdown(connector_id: str | None, usage_range: UsageRange, dimension: str, *, limit: int | None = None,
                    usage_slice: UsageSlice = EVERYTHING) -> list[BreakdownRow]:
    """Sums per ``dimension`` ("user_name" or "model"), largest total first; beyond ``limit``, one others row.

    ``connector_id`` None sums over every connector (the overview's "per user" charts, as Kibana's dashboard)."""
    if dimension not in ("user_name", "model"):
        raise ValueError(f"cannot break usage down by {dimension!r}")
    sums_by_key: dict[str, UsageSums] = {}
    # The amount of the cost only, as the usage API gives it per user and model (the per-API-key breakdown adds the
    # estimated and unpriced counts).
    sums = _sum_expressions(("requests", *TOKEN_FIELDS, "cost_nanos"))
    for source in _grouped_sources(connector_id, usage_range, dimension, usage_slice):
        for row in source.annotate(**sums):
            sums_by_key.setdefault(row["value"], UsageSums()).add_row(row)
    return _limited(sums_by_key, limit)


def _limited(sums_by_key: dict[str, UsageSums], limit: int | None) -> list[BreakdownRow]:
    breakdown = [BreakdownRow(key, sums) for key, sums in sums_by_key.items()]
    breakdown.sort(key=lambda item: (-item.sums.total_tokens, -item.sums.requests, item.key))
    if limit is not None and len(breakdown) > limit:
        others = BreakdownRow(f"{len(breakdown) - limit + 1} others", UsageSums(), is_others=True)
        for item in breakdown[limit - 1 :]:
            others.sums.add(item.sums)
        breakdown = breakdown[: limit - 1] + [others]
    return breakdown


def usage_by_api_key(connector_id: str, usage_range: UsageRange, *, limit: int | None = None,
                     usage_slice: UsageSlice = EVERYTHING) -> list[BreakdownRow]:
    """Sums per API key the calls were made with (``""``: calls without one, from the browser or with a password,
    and the calls of a key since deleted), in the current space.

    Read from the summaries per API key as the other breakdowns are per user and model: the daily rows of the
    range's whole UTC days and the hourly rows of the hours at its ends (``dimension_sources``; for a slice,
    ``rollup_sources``), grouped by key in the database, then one query for the keys' names. Its cost is the
    per-user breakdown's, a few queries whatever the number of events in the range; the raw events are not read.
    """
    fields = ("requests", *TOKEN_FIELDS, "estimated_requests", *COST_FIELDS)
    sums_by_id: dict[int, UsageSums] = {}
    for source in _grouped_sources(connector_id, usage_range, "api_key_id", usage_slice):
        for row in source.annotate(**_sum_expressions(fields)):
            # The summaries hold the id as text (one value column for every dimension).
            sums_by_id.setdefault(int(row["value"]), UsageSums()).add_row(row)
    key_ids = [key_id for key_id in sums_by_id if key_id != NO_API_KEY]
    keys = ApiKey.objects.filter(pk__in=key_ids).select_related("user") if key_ids else []
    names = {key.pk: f"{key} of {key.user.get_username()}" for key in keys}
    sums_by_key: dict[str, UsageSums] = {}
    for key_id, sums in sums_by_id.items():
        sums_by_key.setdefault(names.get(key_id, ""), UsageSums()).add(sums)
    ids = {label: key_id for key_id, label in names.items()}
    limited = _limited(sums_by_key, limit)
    for row in limited:
        row.key_id = None if row.is_others else ids.get(row.key)
    return limited


def event_sum_expressions() -> dict:
    """The UsageSums of raw events (the same ``sum_<field>`` keys as the rollup annotations), for "My usage"."""
    return {
        "sum_requests": Count("id"),
        "sum_failures": Count("id", filter=Q(outcome=Outcome.FAILURE)),
        **{f"sum_{name}": Sum(name) for name in TOKEN_FIELDS},
        "sum_estimated_requests": Count("id", filter=Q(usage_source=UsageSource.ESTIMATED)),
        "sum_cost_nanos": Sum("cost_nanos"),
        "sum_unpriced_requests": Count("id", filter=unpriced_condition()),
    }


def connector_usage(connector_id: str, usage_range: UsageRange, *, breakdown_limit: int | None = None,
                    with_api_keys: bool = False, usage_slice: UsageSlice = EVERYTHING) -> UsageReport:
    """The report behind a connector's dashboard, its CSV export and its JSON endpoint, in the current space, for a
    slice if given (``with_api_keys``: the per-API-key breakdown too, see ``usage_by_api_key``)."""
    series = usage_series(connector_id, usage_range, usage_slice)
    totals = UsageSums()
    for point in series:
        totals.add(point.sums)
    return UsageReport(
        connector_id=connector_id,
        range=usage_range,
        totals=totals,
        series=series,
        by_user=usage_breakdown(connector_id, usage_range, "user_name", limit=breakdown_limit, usage_slice=usage_slice),
        by_model=usage_breakdown(connector_id, usage_range, "model", limit=breakdown_limit, usage_slice=usage_slice),
        by_api_key=usage_by_api_key(connector_id, usage_range, limit=breakdown_limit, usage_slice=usage_slice)
        if with_api_keys else [],
    )


@dataclass
class ConnectorRef:
    """A connector as the usage pages know it: a live one, or one that was deleted but left usage behind."""

    id: str
    name: str
    connector: Connector | None = None

    @property
    def deleted(self) -> bool:
        return self.connector is None


def _name_from_events(connector_id: str) -> str | None:
    # The newest event of the space carries the latest name; served by the (connector_id, timestamp) index.
    return (
        space_scope.events().filter(connector_id=connector_id)
        .order_by("-timestamp")
        .values_list("connector_name", flat=True)
        .first()
    )


def find_connector(connector_id: str) -> ConnectorRef | None:
    """The connector of a usage URL: live, or deleted with events or rollups left; None when neither exists."""
    if unstorable_character_error("id", connector_id):
        return None  # no row holds such an id, and PostgreSQL could not even compare it
    connector = lookup.find(connector_id)
    if connector is not None:
        return ConnectorRef(connector.pk, connector.name, connector)
    name = _name_from_events(connector_id)
    if name is not None:
        return ConnectorRef(connector_id, name)
    if of_space(UsageRollup.objects.all(), connector_id).exists():
        # Its events were pruned; the space's rollups are all that is left, without a name.
        return ConnectorRef(connector_id, connector_id)
    return None


@dataclass
class OverviewRow:
    connector: ConnectorRef
    sums: UsageSums


def usage_overview(usage_range: UsageRange, usage_slice: UsageSlice = EVERYTHING) -> list[OverviewRow]:
    """Every connector (live ones even without usage, deleted ones with usage in the range) with its totals."""
    rows = (
        _hourly_totals(None, usage_range.start, usage_range.end, usage_slice)
        .order_by()
        .values("connector_id")
        .annotate(**_sum_expressions(("requests", *TOKEN_FIELDS, *DETAIL_FIELDS, *COST_FIELDS, *BIN_FIELDS)))
    )
    sums_by_id: dict[str, UsageSums] = {}
    for row in rows:
        sums = sums_by_id.setdefault(row["connector_id"], UsageSums())
        sums.add_row(row)
    overview = [
        OverviewRow(ConnectorRef(c.pk, c.name, c), sums_by_id.pop(c.pk, UsageSums()))
        for c in lookup.all_connectors()
    ]
    for connector_id, sums in sorted(sums_by_id.items()):  # only the space's (see _hourly_totals)
        overview.append(OverviewRow(ConnectorRef(connector_id, _name_from_events(connector_id) or connector_id), sums))
    return overview


RAW_EVENT_COLUMNS = (
    "timestamp",
    "connector_id",
    "connector_name",
    "user_name",
    "source",
    "sub_action",
    "outcome",
    "duration_ms",
    "upstream_status",
    "requested_model",
    "response_model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "usage_source",
    "error_message",
    "request_bytes",
    "response_bytes",
    "api_key_id",
    "cost_nanos",
)
RAW_EVENT_CHUNK = 2000


def _raw_events_queryset(connector_id: str, usage_range: UsageRange, filters: EventFilters | None):
    events = space_scope.events().filter(
        connector_id=connector_id, timestamp__gte=usage_range.start, timestamp__lt=usage_range.end
    )
    if filters is not None:
        events = filters.apply(events)
    return events.order_by("timestamp", "id").values_list(*RAW_EVENT_COLUMNS)


def raw_events(connector_id: str, usage_range: UsageRange, filters: EventFilters | None = None) -> Iterator[tuple]:
    """The range's events (under the Logs tab's ``filters``), oldest first, fetched in chunks (a server-side
    cursor on PostgreSQL)."""
    return _raw_events_queryset(connector_id, usage_range, filters).iterator(chunk_size=RAW_EVENT_CHUNK)


async def araw_events(
    connector_id: str, usage_range: UsageRange, filters: EventFilters | None = None
) -> AsyncIterator[tuple]:
    """``raw_events`` for ASGI, where a synchronous iterator would be read whole into memory before sending.

    Not QuerySet.aiterator(): for values_list() querysets it runs the query in the event loop's thread
    (SynchronousOnlyOperation). The lazy synchronous iterator is advanced one chunk at a time in the
    thread that owns the connection instead.
    """
    rows = raw_events(connector_id, usage_range, filters)
    while True:
        chunk = await sync_to_async(_next_chunk)(rows)
        for row in chunk:
            yield row
        if len(chunk) < RAW_EVENT_CHUNK:
            return


def _next_chunk(rows: Iterator[tuple]) -> list[tuple]:
    return list(islice(rows, RAW_EVENT_CHUNK))
