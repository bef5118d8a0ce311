"""The numbers of the usage dashboards: totals, series and breakdowns equal the sums of the recorded events."""

import dataclasses
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.helpers.events import CONNECTOR, USERS, record, record_mix
from usage.dashboards.queries import UsageSums, connector_usage, find_connector, percentile_ms, usage_overview
from usage.models import LATENCY_BIN_BOUNDS_MS, ExecutionEvent
from usage.ranges import DAY, HOUR, InvalidRange, parse_range


def expected_sums(events) -> dict[str, int]:
    return {
        "requests": len(events),
        "failures": sum(e.outcome == "failure" for e in events),
        "prompt_tokens": sum(e.prompt_tokens for e in events),
        "completion_tokens": sum(e.completion_tokens for e in events),
        "total_tokens": sum(e.total_tokens for e in events),
        "cached_tokens": sum(e.cached_tokens or 0 for e in events),
        "reasoning_tokens": sum(e.reasoning_tokens or 0 for e in events),
        "estimated_requests": sum(e.usage_source == "estimated" for e in events),
    }


def api_sums(events) -> dict[str, int]:
    """The JSON API's five numbers."""
    sums = expected_sums(events)
    return {name: sums[name] for name in ("requests", "failures", "prompt_tokens", "completion_tokens", "total_tokens")}


def actual_sums(sums: UsageSums) -> dict[str, int]:
    return {name: getattr(sums, name) for name in expected_sums([])}


def local_bucket(moment: datetime, tz: ZoneInfo, bucket: str) -> datetime:
    local = moment.astimezone(tz)
    if bucket == HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    return datetime(local.year, local.month, local.day, tzinfo=tz)


pytestmark = pytest.mark.django_db


# -- ranges ------------------------------------------------------------------------------------------------------


NOW = datetime(2025, 3, 10, 14, 25, tzinfo=UTC)


def test_the_default_range_is_the_last_seven_days_in_hours_ending_with_the_current_hour():
    usage_range = parse_range({}, now=NOW)
    assert usage_range.key == "7d" and usage_range.bucket == HOUR
    assert usage_range.end == datetime(2025, 3, 10, 15, tzinfo=UTC)
    assert usage_range.start == usage_range.end - timedelta(days=7)
    assert len(usage_range.bucket_starts()) == 7 * 24


def test_the_last_24_hours_are_24_hourly_buckets():
    usage_range = parse_range({"range": "24h"}, now=NOW)
    assert usage_range.bucket == HOUR and len(usage_range.bucket_starts()) == 24


@pytest.mark.parametrize("key, days", [("30d", 30), ("90d", 90)])
def test_long_ranges_are_whole_days_in_the_viewers_time_zone(key, days):
    usage_range = parse_range({"range": key, "tz": "America/New_York"}, now=NOW)
    assert usage_range.bucket == DAY
    starts = usage_range.bucket_starts()
    assert len(starts) == days
    assert all(start.hour == 0 and start.minute == 0 for start in starts)
    assert starts[-1].date() == NOW.astimezone(ZoneInfo("America/New_York")).date()
    # The US switched to summer time on 2025-03-09: that day is 23 hours long, and the range still ends at midnight.
    assert usage_range.end == datetime(2025, 3, 11, 4, tzinfo=UTC)


def test_a_custom_range_is_widened_to_whole_hours():
    usage_range = parse_range({"from": "2025-01-01T10:30:00Z", "to": "2025-01-01T12:10:00+00:00"})
    assert usage_range.key == "custom"
    assert (usage_range.start, usage_range.end) == (datetime(2025, 1, 1, 10, tzinfo=UTC), datetime(2025, 1, 1, 13, tzinfo=UTC))


def test_custom_dates_without_offset_are_read_in_the_viewers_zone_and_to_includes_its_day():
    usage_range = parse_range({"range": "custom", "from": "2025-01-01", "to": "2025-01-31", "tz": "Asia/Tokyo"})
    assert usage_range.start == datetime(2024, 12, 31, 15, tzinfo=UTC)
    assert usage_range.end == datetime(2025, 1, 31, 15, tzinfo=UTC)
    assert usage_range.bucket == DAY and len(usage_range.bucket_starts()) == 31


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"range": "1y"}, "[range]"),
        ({"from": "yesterday"}, "[from]"),
        ({"from": "2025-01-01", "to": "2025-13-01"}, "[to]"),
        ({"from": "2025-02-01", "to": "2025-01-01"}, "[from]"),
        ({"from": "2025-01-01T10:00:00Z", "to": "2025-01-01T10:00:00Z"}, "[from]"),
        ({"range": "custom"}, "[from]"),
        ({"tz": "Mars/Olympus_Mons"}, "[tz]"),
        ({"tz": "../../etc/passwd"}, "[tz]"),
        ({"from": "1900-01-01", "to": "2100-01-01"}, "[to]"),
    ],
)
def test_bad_parameters_are_named_in_the_error(params, parameter):
    with pytest.raises(InvalidRange) as error:
        parse_range(params, now=NOW)
    assert str(error.value).startswith(parameter)


# -- percentiles -------------------------------------------------------------------------------------------------


def test_percentiles_fall_inside_the_bin_that_holds_the_true_value():
    durations = [5, 7, 30, 40, 45, 120, 180, 450, 900, 2800]
    bins = [0] * (len(LATENCY_BIN_BOUNDS_MS) + 1)
    from usage.models.rollups import latency_bin

    for duration in durations:
        bins[latency_bin(duration)] += 1
    median = percentile_ms(bins, 0.5)
    assert 25 < median <= 100  # the true median (45, 120) straddles the 50 and 100 ms bins
    p95 = percentile_ms(bins, 0.95)
    assert 2000 < p95 <= 3000  # the slowest call, 2800 ms, is in the 2000-3000 ms bin


def test_a_percentile_in_the_open_ended_bin_is_its_lower_bound():
    bins = [0] * (len(LATENCY_BIN_BOUNDS_MS) + 1)
    bins[-1] = 3
    assert percentile_ms(bins, 0.5) == LATENCY_BIN_BOUNDS_MS[-1]
    assert percentile_ms([0] * len(bins), 0.5) is None


# -- totals, series, breakdowns ----------------------------------------------------------------------------------


def test_totals_and_hourly_series_equal_the_sums_of_the_events():
    start = datetime(2025, 3, 1, 22, tzinfo=UTC)
    events = record_mix(start, hours=6)
    record(start - timedelta(microseconds=1))  # just before the range
    record(start + timedelta(hours=6))  # the first instant after it
    report = connector_usage(CONNECTOR, parse_range({"from": start.isoformat(), "to": (start + timedelta(hours=6)).isoformat()}))

    assert actual_sums(report.totals) == expected_sums(events)
    assert report.totals.failures > 0 and report.totals.requests - report.totals.failures > 0
    by_hour = defaultdict(list)
    for event in events:
        by_hour[local_bucket(event.timestamp, ZoneInfo("UTC"), HOUR)].append(event)
    assert [p.bucket for p in report.series] == [start + timedelta(hours=h) for h in range(6)]
    for point in report.series:
        assert actual_sums(point.sums) == expected_sums(by_hour[point.bucket]), point.bucket


@pytest.mark.parametrize("tz_name", ["UTC", "America/New_York", "Asia/Tokyo", "Europe/Paris"])
def test_daily_series_follow_the_viewers_midnight_across_a_dst_change(tz_name):
    tz = ZoneInfo(tz_name)
    # Around the US change to summer time (2025-03-09), with events at every hour's edges for twelve days.
    start = datetime(2025, 3, 1, tzinfo=UTC)
    events = record_mix(start, hours=12 * 24, per_hour=2)
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-03-12", "tz": tz_name})
    report = connector_usage(CONNECTOR, usage_range)
    assert usage_range.bucket == DAY

    in_range = [e for e in events if usage_range.start <= e.timestamp < usage_range.end]
    assert actual_sums(report.totals) == expected_sums(in_range)
    expected = defaultdict(list)
    for event in in_range:
        expected[local_bucket(event.timestamp, tz, usage_range.bucket)].append(event)
    assert {p.bucket for p in report.series} >= set(expected)
    for point in report.series:
        assert actual_sums(point.sums) == expected_sums(expected.get(point.bucket, [])), point.bucket


def test_daily_buckets_in_a_zone_with_dst_have_one_23_hour_day():
    start = datetime(2025, 3, 1, tzinfo=UTC)
    events = record_mix(start, hours=15 * 24, per_hour=2)
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-03-15", "tz": "America/New_York"})
    assert usage_range.bucket == DAY
    report = connector_usage(CONNECTOR, usage_range)
    tz = ZoneInfo("America/New_York")
    by_day = defaultdict(list)
    for event in events:
        if usage_range.start <= event.timestamp < usage_range.end:
            by_day[local_bucket(event.timestamp, tz, DAY)].append(event)
    counts = {p.bucket.date().isoformat(): p.sums.requests for p in report.series}
    assert counts["2025-03-09"] == 23 * 2 and counts["2025-03-08"] == 24 * 2
    for point in report.series:
        assert actual_sums(point.sums) == expected_sums(by_day[point.bucket])


def test_breakdowns_by_user_and_model_equal_the_sums_of_the_events():
    start = datetime(2025, 3, 1, tzinfo=UTC)
    events = record_mix(start, hours=30, per_hour=4)
    report = connector_usage(CONNECTOR, parse_range({"from": "2025-03-01", "to": "2025-03-02"}))
    by_user, by_model = defaultdict(list), defaultdict(list)
    for event in events:
        by_user[event.user_name].append(event)
        by_model[event.model].append(event)
    assert {row.key for row in report.by_user} == set(USERS)
    assert {row.key for row in report.by_model} == set(by_model)
    for row in report.by_user:
        assert row.sums.api_dict() == api_sums(by_user[row.key]), row.key
    for row in report.by_model:
        assert row.sums.api_dict() == api_sums(by_model[row.key]), row.key
    totals = [row.sums.total_tokens for row in report.by_user]
    assert totals == sorted(totals, reverse=True)


@pytest.mark.parametrize("tz_name", ["UTC", "America/New_York"])
def test_breakdowns_over_partial_and_whole_days_equal_the_sums_of_the_events(tz_name):
    # Whole UTC days come from the daily summary, the hours before and after them from the hourly rollups.
    start = datetime(2025, 3, 1, tzinfo=UTC)
    events = record_mix(start, hours=5 * 24, per_hour=2, seed=11)
    usage_range = parse_range({"from": "2025-03-01T05:00", "to": "2025-03-04T19:00", "tz": tz_name})
    report = connector_usage(CONNECTOR, usage_range)
    in_range = [e for e in events if usage_range.start <= e.timestamp < usage_range.end]
    assert report.totals.api_dict() == api_sums(in_range)
    for dimension, rows in (("user_name", report.by_user), ("model", report.by_model)):
        groups = defaultdict(list)
        for event in in_range:
            groups[event.user_name if dimension == "user_name" else event.model].append(event)
        assert {row.key: row.sums.api_dict() for row in rows} == {key: api_sums(group) for key, group in groups.items()}


def test_breakdowns_beyond_the_limit_are_summed_into_one_others_row():
    start = datetime(2025, 3, 1, tzinfo=UTC)
    for index in range(6):
        record(start + timedelta(minutes=index), user_name=f"user{index}", prompt_tokens=100 * (index + 1))
    report = connector_usage(CONNECTOR, parse_range({"from": "2025-03-01", "to": "2025-03-02"}), breakdown_limit=3)
    assert [row.key for row in report.by_user[:2]] == ["user5", "user4"]
    others = report.by_user[2]
    assert others.is_others and others.key == "4 others"
    assert others.sums.prompt_tokens == 100 * (1 + 2 + 3 + 4)


def test_other_connectors_do_not_count():
    start = datetime(2025, 3, 1, tzinfo=UTC)
    record(start, prompt_tokens=7)
    record(start, connector_id="someone-else", prompt_tokens=1000)
    report = connector_usage(CONNECTOR, parse_range({"from": "2025-03-01", "to": "2025-03-02"}))
    assert report.totals.prompt_tokens == 7 and report.totals.requests == 1


def test_an_empty_range_has_zero_buckets_not_missing_ones():
    # A date alone for "to" means the end of that day: one day, 24 hours.
    report = connector_usage(CONNECTOR, parse_range({"from": "2025-03-01", "to": "2025-03-01"}))
    assert report.is_empty and len(report.series) == 24
    assert all(point.sums.requests == 0 for point in report.series)
    assert report.by_user == [] and report.by_model == []


def test_median_and_p95_come_from_the_latency_bins_of_the_events():
    start = datetime(2025, 3, 1, tzinfo=UTC)
    for duration in [20] * 50 + [400] * 45 + [8000] * 5:
        record(start, duration_ms=duration)
    report = connector_usage(CONNECTOR, parse_range({"from": "2025-03-01", "to": "2025-03-02"}))
    assert 10 < report.totals.p50_ms <= 25  # the 50th of 100 is a 20 ms call
    assert 300 < report.totals.p95_ms <= 500  # the 95th is a 400 ms call
    assert report.totals.error_rate == 0


# -- connectors that no longer exist -----------------------------------------------------------------------------


def test_a_deleted_connector_is_named_from_its_newest_event(make_connector):
    record(datetime(2025, 3, 1, tzinfo=UTC), connector_id="gone", connector_name="Old name")
    record(datetime(2025, 3, 2, tzinfo=UTC), connector_id="gone", connector_name="Renamed before deletion")
    found = find_connector("gone")
    assert found.deleted and found.name == "Renamed before deletion"
    live = make_connector(name="Alive")
    assert find_connector(live.pk).connector == live
    assert find_connector("never-existed") is None


def test_the_overview_lists_live_connectors_and_deleted_ones_with_usage(make_connector):
    live = make_connector(name="Alive")
    idle = make_connector(name="Idle")
    start = datetime(2025, 3, 1, tzinfo=UTC)
    record(start, connector_id=live.pk, prompt_tokens=11, completion_tokens=1)
    record(start, connector_id="gone", connector_name="Gone", prompt_tokens=5, completion_tokens=5)
    rows = {row.connector.name: row for row in usage_overview(parse_range({"from": "2025-03-01", "to": "2025-03-02"}))}
    assert rows["Alive"].sums.total_tokens == 12
    assert rows["Idle"].sums.requests == 0 and not rows["Idle"].connector.deleted
    assert rows["Gone"].connector.deleted and rows["Gone"].sums.total_tokens == 10
    assert idle.pk in {row.connector.id for row in rows.values()}


# -- by API key: from the rollups, equal to the key's events ----------------------------------------------------


def every_sum(sums: UsageSums) -> dict:
    """All of a UsageSums, the float sum of durations rounded (added in another order, it differs in the last bit)."""
    values = dataclasses.asdict(sums)
    values["duration_ms_sum"] = round(values["duration_ms_sum"], 6)
    return values


@pytest.mark.parametrize("params", [
    {"from": "2025-03-01T20:00:00+00:00", "to": "2025-03-03T02:00:00+00:00"},  # hourly buckets, two day boundaries
    {"range": "90d", "tz": "America/New_York"},  # daily buckets in a zone with DST
])
def test_a_dashboard_sliced_by_api_key_equals_the_dashboard_of_the_keys_calls_alone(django_user_model, params):
    from connectors.accounts.api_keys import create_api_key
    from usage.dashboards.queries import UsageSlice

    owner = django_user_model.objects.create_user("keyholder")
    key, _ = create_api_key(owner, "batch")
    other, _ = create_api_key(owner, "other")
    start = datetime(2025, 3, 1, 20, tzinfo=UTC) if "from" in params else datetime.now(UTC) - timedelta(days=30)
    start = start.replace(minute=0, second=0, microsecond=0)
    events = record_mix(start, hours=30, per_hour=4, api_key=key)
    whole = connector_usage(CONNECTOR, parse_range(params))  # every event so far is the key's
    record_mix(start, hours=30, seed=9, api_key=other)  # the same hours, another key: must not count
    record_mix(start, hours=30, seed=10)  # and calls without a key

    sliced = connector_usage(CONNECTOR, parse_range(params), usage_slice=UsageSlice(api_key=key.pk))

    assert actual_sums(sliced.totals) == actual_sums(whole.totals) == expected_sums(events)
    assert every_sum(sliced.totals) == every_sum(whole.totals)  # cost, estimated and unpriced counts, latency bins
    assert [(p.bucket, every_sum(p.sums)) for p in sliced.series] == [(p.bucket, every_sum(p.sums)) for p in whole.series]
    assert [(r.key, every_sum(r.sums)) for r in sliced.by_user] == [(r.key, every_sum(r.sums)) for r in whole.by_user]
    assert [(r.key, every_sum(r.sums)) for r in sliced.by_model] == [(r.key, every_sum(r.sums)) for r in whole.by_model]
    narrower = connector_usage(CONNECTOR, parse_range(params), usage_slice=UsageSlice(user="bob", api_key=key.pk))
    assert narrower.totals.total_tokens == sum(e.total_tokens for e in events if e.user_name == "bob") > 0
    nobody = connector_usage(CONNECTOR, parse_range(params), usage_slice=UsageSlice(api_key=other.pk + 1000))
    assert nobody.is_empty


def record_keyed_calls(owner, start: datetime, hours: int) -> list:
    """Calls with two keys and without one, priced, unpriced (tokens but no price) and estimated, every hour."""
    import random

    from connectors.accounts.api_keys import create_api_key

    keys = [create_api_key(owner, name)[0] for name in ("batch", "ci")] + [None]
    rng = random.Random(3)
    events = []
    for hour in range(hours):
        for _ in range(3):
            failed = rng.random() < 0.2
            events.append(record(
                start + timedelta(hours=hour, seconds=rng.randrange(3600)), api_key=rng.choice(keys),
                user_name=rng.choice(USERS), outcome="failure" if failed else "success",
                prompt_tokens=0 if failed else rng.randrange(1, 900), completion_tokens=0 if failed else rng.randrange(300),
                usage_source=rng.choice(("provider", "estimated")),
                cost_nanos=rng.choice((None, rng.randrange(1, 10**9))),
            ))
    return events


PER_KEY_SUMS = ("requests", "failures", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_requests",
                "cost_nanos", "unpriced_requests")


def per_key_of_events(events) -> dict[str, dict]:
    """The per-API-key breakdown as a GROUP BY over the raw events would give it, labelled as the dashboard does."""
    grouped: dict[str, list] = defaultdict(list)
    for event in events:
        key = event.api_key
        grouped[f"{key} of {key.user.get_username()}" if key else ""].append(event)
    sums = {}
    for label, group in grouped.items():
        sums[label] = {**expected_sums(group), "cost_nanos": sum(e.cost_nanos or 0 for e in group),
                       "unpriced_requests": sum(e.cost_nanos is None and e.total_tokens > 0 for e in group)}
        sums[label] = {name: sums[label][name] for name in PER_KEY_SUMS}
    return sums


def per_key_of_report(rows) -> dict[str, dict]:
    return {row.key: {name: getattr(row.sums, name) for name in PER_KEY_SUMS} for row in rows}


@pytest.mark.parametrize("params", [
    {"from": "2025-03-01T20:00:00+00:00", "to": "2025-03-04T05:00:00+00:00"},  # hourly ends around whole days
    {"from": "2025-03-02T01:00:00+00:00", "to": "2025-03-02T07:00:00+00:00"},  # inside one day: hourly rows only
])
def test_the_per_api_key_breakdown_from_the_rollups_equals_a_grouping_of_the_raw_events(django_user_model, params):
    from usage.dashboards.queries import usage_by_api_key

    owner = django_user_model.objects.create_user("keyholder")
    events = record_keyed_calls(owner, datetime(2025, 3, 1, 18, tzinfo=UTC), hours=70)
    usage_range = parse_range(params)
    in_range = [e for e in events if usage_range.start <= e.timestamp < usage_range.end]

    rows = usage_by_api_key(CONNECTOR, usage_range)

    assert per_key_of_report(rows) == per_key_of_events(in_range)
    assert {"", "batch", "ci"} == {row.key.split(" (")[0] for row in rows}
    assert all(row.key_id is None if row.key == "" else row.key_id in {e.api_key_id for e in in_range} for row in rows)
    # A deleted key: its events lose the key (SET_NULL) and the rollups keep its id; both count it without a key.
    gone = next(e.api_key for e in in_range if e.api_key)
    gone.delete()
    after = [ExecutionEvent.objects.select_related("api_key__user").get(pk=e.pk, timestamp=e.timestamp)
             for e in in_range]
    assert per_key_of_report(usage_by_api_key(CONNECTOR, usage_range)) == per_key_of_events(after)


def test_the_90_day_breakdowns_read_the_per_dimension_summaries_in_a_fixed_number_of_queries(django_user_model):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from usage.dashboards.queries import usage_by_api_key

    owner = django_user_model.objects.create_user("keyholder")
    now = datetime.now(UTC)

    def breakdown_queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            rows = usage_by_api_key(CONNECTOR, parse_range({"range": "90d"}))
            connector_usage(CONNECTOR, parse_range({"range": "90d"}), with_api_keys=True)
        assert sum(row.sums.requests for row in rows) == ExecutionEvent.objects.count()
        return [query["sql"] for query in captured]

    record_keyed_calls(owner, now - timedelta(days=40), hours=5)
    few = breakdown_queries()
    record_keyed_calls(owner, now - timedelta(days=80), hours=60)  # twelve times the events, over more days
    record_keyed_calls(owner, now - timedelta(hours=3), hours=3)  # and in the partial day at the end
    many = breakdown_queries()

    assert len(many) == len(few)
    assert not [sql for sql in many if "usage_executionevent" in sql]
    # Unsliced, the breakdowns read one row per user, model or key and day, not the rollups keyed by all three.
    assert not [sql for sql in many if "usage_usagedailyrollup" in sql or '"usage_usagerollup"' in sql]
    assert [sql for sql in many if "usage_usagedimensiondaily" in sql]


@pytest.mark.parametrize("raw, expected", [("12", 12), (" 7 ", 7), ("", None), ("abc", None), ("-3", None),
                                           ("9" * 40, None), ("１２", None), ("²", None)])
def test_the_api_key_filter_takes_ids_only(raw, expected):
    from usage.dashboards.queries import UsageSlice

    usage_slice = UsageSlice.from_params({"api_key": raw})
    assert usage_slice.api_key == expected
    assert bool(usage_slice) is (expected is not None)
    assert usage_slice.query_params() == ({"api_key": str(expected)} if expected is not None else {})
