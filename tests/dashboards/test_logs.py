"""The Logs tab (/connectors/<id>/logs/): who sees what, keyset pages, filters, search, counts, detail, CSV."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.helpers.events import record, record_mix
from usage.dashboards import logs
from usage.dashboards.event_filters import EventFilters
from usage.dashboards.logs import COUNT_CAP, Cursor, log_page, outcome_counts
from usage.models import ExecutionEvent
from usage.ranges import parse_range

pytestmark = pytest.mark.django_db

RANGE = "from=2025-03-01&to=2025-03-03"
START = datetime(2025, 3, 1, 6, tzinfo=UTC)


@pytest.fixture
def connector(make_connector):
    connector = make_connector(name="Logged")
    record_mix(START, hours=20, connector_id=connector.pk, per_hour=4)
    return connector


def logs_url(connector, query: str = RANGE) -> str:
    return f"/connectors/{connector.pk}/logs/?{query}"


def shown_event_ids(response) -> list[int]:
    return [int(value) for value in re.findall(r'data-event="(\d+)"', response.content.decode())]


# -- who sees what -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "status"),
    [("admin", 200), ("connector_admin", 200), ("operator", 200), ("analyst", 200), ("outsider", 403)],
)
def test_each_persona_opens_the_logs_tab_or_gets_a_403_naming_the_permission(client, personas, connector, persona, status):
    client.force_login(personas[persona])
    response = client.get(logs_url(connector))
    assert response.status_code == status
    if status == 403:
        text = response.content.decode()
        assert "connectors.view_connector" in text and "usage.view_usage_dashboard" in text and "Usage viewers" in text


def test_anonymous_users_are_sent_to_log_in(client, connector):
    response = client.get(logs_url(connector))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_user_without_the_usage_permission_sees_only_their_own_calls_and_is_told_so(client, operator, analyst, connector):
    mine = [record(START + timedelta(minutes=m), connector_id=connector.pk, user=operator, user_name="olivia") for m in (1, 2, 3)]
    client.force_login(operator)
    response = client.get(logs_url(connector, RANGE + "&user=alice"))  # a user filter cannot widen the view
    assert sorted(shown_event_ids(response)) == sorted(event.pk for event in mine)
    assert "your own calls only" in response.content.decode()
    other = ExecutionEvent.objects.filter(connector_id=connector.pk).exclude(user=operator).first()
    assert client.get(f"/connectors/{connector.pk}/logs/{other.pk}/").status_code == 404
    assert client.get(f"/connectors/{connector.pk}/logs/{mine[0].pk}/").status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(client.get(
        f"/usage/connectors/{connector.pk}/events.csv?{RANGE}").streaming_content).decode())))
    assert len(rows) == 3 and {row["user_name"] for row in rows} == {"olivia"}

    client.force_login(analyst)
    response = client.get(logs_url(connector))
    assert "your own calls only" not in response.content.decode()
    assert len(shown_event_ids(response)) == 50


def suggestions_url(connector, query: str = RANGE) -> str:
    return f"/connectors/{connector.pk}/logs/suggestions.json?{query}"


def test_the_filter_suggestions_are_the_ranges_users_and_models_most_used_first(client, analyst, connector):
    for minute in range(40):  # "zed" is the largest user of the range, by far
        record(START + timedelta(minutes=minute), connector_id=connector.pk, user_name="zed", prompt_tokens=10_000)
    record(datetime(2025, 4, 1, tzinfo=UTC), connector_id=connector.pk, user_name="outside-the-range")
    client.force_login(analyst)
    response = client.get(suggestions_url(connector))
    assert response.status_code == 200 and response["Cache-Control"] == "private, max-age=300"
    suggestions = response.json()
    assert suggestions["users"][0] == "zed"
    assert set(suggestions["users"]) == {"zed", "alice", "bob", "carol"}  # "" (no user) is no suggestion
    assert set(suggestions["models"]) == {"gpt-4o", "gpt-4o-mini", "o3-mini", "gpt-4o-2024-08-06"}
    # The page itself does not compute them: it names where its script fetches them, for its own range.
    page = client.get(logs_url(connector)).content.decode()
    [url] = re.findall(r'data-log-suggestions="([^"]+)"', page)
    assert url.startswith(f"/connectors/{connector.pk}/logs/suggestions.json?range=custom&amp;from=2025-03-01")
    assert "<datalist id=\"log-users\"></datalist>" in page


def test_someone_who_sees_only_their_own_calls_gets_no_suggestions(client, operator, connector):
    client.force_login(operator)
    assert client.get(suggestions_url(connector)).json() == {"users": [], "models": []}
    assert "data-log-suggestions" not in client.get(logs_url(connector)).content.decode()


def test_the_suggestions_need_a_login_and_a_permission(client, outsider, connector):
    response = client.get(suggestions_url(connector))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    assert client.get(suggestions_url(connector)).status_code == 403


def test_an_unknown_connector_is_a_404(client, analyst):
    client.force_login(analyst)
    assert client.get("/connectors/nope/logs/").status_code == 404


# -- pages -------------------------------------------------------------------------------------------------------


def test_walking_the_pages_older_then_newer_shows_every_event_once_newest_first(client, analyst, connector):
    # Ties on the timestamp: the id orders them, so no event is skipped or repeated at a page boundary.
    for _ in range(7):
        record(START + timedelta(hours=3), connector_id=connector.pk)
    expected = list(
        ExecutionEvent.objects.filter(connector_id=connector.pk).order_by("-timestamp", "-id").values_list("pk", flat=True)
    )
    client.force_login(analyst)
    seen, pages, url = [], [], logs_url(connector)
    while url:
        response = client.get(url)
        pages.append(url)
        seen += shown_event_ids(response)
        match = re.search(r'href="([^"]+)" rel="next"', response.content.decode())
        url = match.group(1).replace("&amp;", "&") if match else None
    assert seen == expected and len(pages) == 2  # 87 events, 50 a page
    # Back from the last page: "Newer" shows the first page again.
    newer = re.search(r'href="([^"]+)" rel="prev"', client.get(pages[-1]).content.decode()).group(1).replace("&amp;", "&")
    assert shown_event_ids(client.get(newer)) == expected[:50]


def test_log_page_reads_newer_pages_from_a_cursor(connector):
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-03-03"})
    everything = list(ExecutionEvent.objects.filter(connector_id=connector.pk).order_by("-timestamp", "-id"))
    cursor = Cursor(everything[30].timestamp, everything[30].pk)
    page = log_page(connector.pk, usage_range, EventFilters(), after=cursor, size=10)
    assert [row["id"] for row in page.events] == [e.pk for e in everything[20:30]]
    assert page.newer is not None and page.older is not None


def _pages(connector_id: str, usage_range, filters: EventFilters) -> list[list[int]]:
    """Every page of the range, of 10 events, older and older, then newer and newer from the last one."""
    pages, page = [], log_page(connector_id, usage_range, filters, size=10)
    while True:
        pages.append([row["id"] for row in page.events])
        if page.older is None:
            break
        page = log_page(connector_id, usage_range, filters, before=page.older, size=10)
    while page.newer is not None:
        page = log_page(connector_id, usage_range, filters, after=page.newer, size=10)
        pages.append([row["id"] for row in page.events])
    return pages


@pytest.mark.parametrize("filters", [EventFilters(), EventFilters(outcome="failure"), EventFilters(user="bob")])
def test_pages_read_in_narrow_windows_first_are_the_pages_of_one_read_of_the_range(connector, monkeypatch, filters):
    # Events far apart: the windows of a day and a week hold some pages' rows only in part.
    for day in range(0, 30, 3):
        record_mix(START + timedelta(days=day), hours=2, connector_id=connector.pk, per_hour=9, seed=day)
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-04-02"})
    windowed = _pages(connector.pk, usage_range, filters)
    monkeypatch.setattr(logs, "WINDOWS", ())
    whole = _pages(connector.pk, usage_range, filters)
    assert windowed == whole and len(whole) > 3


def test_a_busy_connectors_first_page_is_read_in_its_last_day(connector):
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-03-03"})  # to the end of March 3rd
    for minute in range(60):
        record(datetime(2025, 3, 3, 23, tzinfo=UTC) + timedelta(minutes=minute), connector_id=connector.pk)
    with CaptureQueriesContext(connection) as captured:
        page = log_page(connector.pk, usage_range, EventFilters())
    [query] = [q["sql"] for q in captured if "LIMIT 51" in q["sql"]]  # one read, of the last day only
    assert re.search(r'"timestamp" >= \'2025-03-03[ T]00:00:00', query)
    assert len(page.events) == 50 and page.older is not None


@pytest.mark.parametrize("cursor", ["not-base64!", "Zm9vfGJhcg", ""])
def test_an_edited_page_link_is_a_clear_error_not_a_500(client, analyst, connector, cursor):
    client.force_login(analyst)
    response = client.get(logs_url(connector, f"{RANGE}&before={cursor or 'x'}"))
    assert response.status_code == 400
    assert "this page link is not valid" in response.content.decode()


# -- filters, search, counts -------------------------------------------------------------------------------------


def test_filters_narrow_the_rows_and_stay_in_the_page_links(client, analyst, connector):
    record(START + timedelta(minutes=5), connector_id=connector.pk, outcome="failure", sub_action="invokeAI",
           error_message="Status code: 429. Message: API Error: Too Many Requests - slow down", upstream_status=429)
    client.force_login(analyst)
    response = client.get(logs_url(connector, RANGE + "&outcome=failure&sub_action=invokeAI&q=too+MANY"))
    ids = shown_event_ids(response)
    assert len(ids) == 1
    html = response.content.decode()
    assert "slow down" in html and "429" in html
    assert "outcome=failure" in re.search(r'href="([^"]+)" download data-export="events"', html).group(1)


def test_a_model_filter_matches_the_reported_model_or_else_the_requested_one(connector):
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-03-03"})
    page = log_page(connector.pk, usage_range, EventFilters(model="gpt-4o-2024-08-06"), size=500)
    assert page.events and all(row["response_model"] == "gpt-4o-2024-08-06" for row in page.events)
    page = log_page(connector.pk, usage_range, EventFilters(model="gpt-4o-mini"), size=500)
    assert page.events and all(row["response_model"] == "" and row["requested_model"] == "gpt-4o-mini" for row in page.events)


@pytest.mark.parametrize("query", ["outcome=maybe", "sub_action=rm+-rf"])
def test_an_unknown_filter_value_is_a_400_naming_the_parameter(client, analyst, connector, query):
    client.force_login(analyst)
    response = client.get(logs_url(connector, f"{RANGE}&{query}"))
    assert response.status_code == 400 and f"[{query.split('=')[0]}]" in response.content.decode()


@pytest.mark.parametrize(
    "filters",
    [EventFilters(), EventFilters(user="alice"), EventFilters(model="gpt-4o"), EventFilters(outcome="failure"),
     EventFilters(sub_action="run"), EventFilters(q="x")],
)
def test_counts_per_outcome_equal_the_events_whether_read_from_rollups_or_events(connector, filters):
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-03-03"})
    counts = {count.outcome: count.count for count in outcome_counts(connector.pk, usage_range, filters)}
    events = filters.without_outcome().apply(ExecutionEvent.objects.filter(connector_id=connector.pk))
    assert counts == {"success": events.filter(outcome="success").count(), "failure": events.filter(outcome="failure").count()}


def test_counts_from_events_are_capped(connector, monkeypatch):
    monkeypatch.setattr("usage.dashboards.logs.COUNT_CAP", 5)
    usage_range = parse_range({"from": "2025-03-01", "to": "2025-03-03"})
    success = outcome_counts(connector.pk, usage_range, EventFilters(sub_action="run"))[0]
    assert (success.count, success.capped) == (5, True)
    assert COUNT_CAP == 10_000


def test_a_start_after_the_end_is_shown_on_the_range_form_of_the_same_page(client, analyst, connector):
    client.force_login(analyst)
    response = client.get(logs_url(connector, "from=2025-03-02&to=2025-03-01"))
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="range-error"' in html and "the start must be before the end" in html and "data-log-filters" in html


# -- detail ------------------------------------------------------------------------------------------------------


def test_the_event_detail_shows_what_was_recorded_and_no_secret(client, analyst, make_connector):
    connector = make_connector(name="Detailed", api_key="sk-detail-secret-999")
    event = record(START, connector_id=connector.pk, cached_tokens=7, reasoning_tokens=11, usage_source="estimated",
                   duration_ms=1.4409899999918707, upstream_status=200, response_model="gpt-4o-2024-08-06")
    client.force_login(analyst)
    html = client.get(f"/connectors/{connector.pk}/logs/{event.pk}/?{RANGE}&tz=Europe/Paris").content.decode()
    for text in ("Estimated with a tokenizer", "1.4 ms", "gpt-4o-2024-08-06", "07:00:00", "API (_execute)"):
        assert text in html
    assert re.search(r"Cached tokens</dt><dd>7<", html) and re.search(r"Reasoning tokens</dt><dd>11<", html)
    assert "sk-detail-secret-999" not in html and "1.44098" not in html
    event.refresh_from_db()
    assert event.uid and str(event.uid) in html  # the event's unique id (the event log's own; no provider request id)


def test_durations_are_rounded_in_the_events_csv(client, analyst, connector):
    record(START, connector_id=connector.pk, duration_ms=1.4409899999918707)
    client.force_login(analyst)
    text = b"".join(client.get(f"/usage/connectors/{connector.pk}/events.csv?{RANGE}").streaming_content).decode()
    assert ",1.4," in text and "1.44098" not in text


def test_each_row_and_the_detail_show_the_api_key_and_the_cost(client, analyst, operator, connector):
    from connectors.accounts.api_keys import create_api_key

    key, _plaintext = create_api_key(operator, "nightly batch")
    priced = record(START + timedelta(minutes=7), connector_id=connector.pk, api_key=key, cost_nanos=1_234_500_000,
                    usage_source="estimated", user_name="nightly-runner")
    client.force_login(analyst)
    page = client.get(logs_url(connector, RANGE + "&user=nightly-runner")).content.decode()
    assert "key nightly batch" in page
    assert "1.2345 USD" in page and "est." in page
    detail = client.get(f"/connectors/{connector.pk}/logs/{priced.pk}/?{RANGE}").content.decode()
    assert "nightly batch" in detail and "1.2345 USD (estimated" in detail
    # The row's own link: the event's page at its exact time, back to the same filtered list.
    link = re.search(rf'<tr data-event="{priced.pk}">\s*<td><a href="([^"]+)"><time datetime="([^"]+)"', page)
    assert link.group(2) == priced.timestamp.isoformat()
    response = client.get(link.group(1).replace("&amp;", "&"))
    assert response.status_code == 200 and "nightly batch" in response.content.decode()
    assert response.context["back_url"].endswith("user=nightly-runner")


@pytest.mark.django_db(transaction=True)
def test_a_message_search_can_use_the_trigram_index_the_readme_offers(connector):
    """README, "The Logs tab": an operator may add a partial trigram index on error_message. The search's query
    says "not empty", so PostgreSQL can use it; without that condition it could not."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("pg_trgm is PostgreSQL's; CI runs the suite on PostgreSQL too")
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        # As the README has it, but not CONCURRENTLY, which cannot run in a transaction. On upper(): Django's
        # icontains is UPPER(error_message) LIKE UPPER(%s) on PostgreSQL.
        cursor.execute("CREATE INDEX event_error_message_trgm ON usage_executionevent "
                       "USING gin (upper(error_message) gin_trgm_ops) WHERE error_message <> ''")
        cursor.execute("SET enable_seqscan = off")  # a handful of rows: make the planner say what it could use
        cursor.execute("SET enable_indexscan = off")
    for message in ("upstream timed out", "Upstream answered 502", "not reachable"):
        record(START, connector_id=connector.pk, outcome="failure", error_message=message)
    try:
        search = EventFilters(q="upstream").apply(ExecutionEvent.objects.all())
        # On the partitioned table each day's partition has its own copy of the index, named after the partition.
        uses_trigram_index = "Index Cond: (upper(error_message) ~~"
        assert uses_trigram_index in search.order_by().explain()
        assert uses_trigram_index not in ExecutionEvent.objects.filter(
            error_message__icontains="upstream").order_by().explain()  # the partial index needs the condition
        failed = set(ExecutionEvent.objects.filter(connector_id=connector.pk, error_message__icontains="upstream")
                     .values_list("pk", flat=True))
        assert len(failed) == 2
        assert set(search.filter(connector_id=connector.pk).values_list("pk", flat=True)) == failed
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_indexscan")
            cursor.execute("DROP INDEX IF EXISTS event_error_message_trgm")
