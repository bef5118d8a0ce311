"""The usage pages, exports and JSON API: permissions, content, errors, and plotly.js served locally."""

import csv
import io
import json
import re
import warnings
from datetime import UTC, datetime, timedelta

import plotly.graph_objects as go
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group, Permission
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.utils import timezone

from tests.conftest import basic_auth
from tests.dashboards.test_queries import api_sums
from tests.helpers.events import record, record_mix
from usage.dashboards.queries import connector_usage
from usage.models import ExecutionEvent
from usage.operations.maintenance import rebuild_rollups
from usage.ranges import parse_range

pytestmark = pytest.mark.django_db

PERSONAS = ["admin", "connector_admin", "operator", "analyst", "outsider"]
# Connector admins open the dashboards of the connectors they manage; connector users do not.
ALLOWED = {"admin", "analyst", "connector_admin"}
PAGES = {
    "overview": "/usage/",
    "dashboard": "/usage/connectors/{id}/",
    "series csv": "/usage/connectors/{id}/export.csv",
    "events csv": "/usage/connectors/{id}/events.csv",
}
API = "/api/usage/connectors/{id}"
RANGE = "from=2025-03-01&to=2025-03-02"


@pytest.fixture
def connector(make_connector):
    connector = make_connector(name="Search assistant")
    record_mix(datetime(2025, 3, 1, 6, tzinfo=UTC), hours=20, connector_id=connector.pk)
    return connector


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# -- permissions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("persona", PERSONAS)
def test_each_usage_page_for_each_persona(client, personas, connector, page, persona):
    client.force_login(personas[persona])
    response = client.get(PAGES[page].format(id=connector.pk))
    # The raw events CSV is the Logs tab's export: connector users get it too, limited to their own calls.
    allowed = ALLOWED | {"operator"} if page == "events csv" else ALLOWED
    assert response.status_code == (200 if persona in allowed else 403), (page, persona)
    if response.status_code == 403:
        assert "usage.view_usage_dashboard" in response.content.decode()


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_users_are_sent_to_login_from_usage_pages(client, connector, page):
    url = PAGES[page].format(id=connector.pk)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("persona", PERSONAS)
def test_the_usage_api_for_each_persona_with_a_session(client, personas, connector, persona):
    client.force_login(personas[persona])
    response = client.get(API.format(id=connector.pk))
    assert response.status_code == (200 if persona in ALLOWED else 403)
    if persona not in ALLOWED:
        assert response.json()["statusCode"] == 403


@pytest.mark.parametrize("persona", PERSONAS)
def test_the_usage_api_for_each_persona_with_basic_auth(client, personas, connector, persona):
    response = client.get(API.format(id=connector.pk), HTTP_AUTHORIZATION=basic_auth(personas[persona]))
    assert response.status_code == (200 if persona in ALLOWED else 403)


def test_the_usage_api_answers_401_without_credentials_or_with_wrong_ones(client, analyst, connector):
    response = client.get(API.format(id=connector.pk))
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Basic")
    assert response.json() == {"statusCode": 401, "error": "Unauthorized", "message": response.json()["message"]}
    response = client.get(API.format(id=connector.pk), HTTP_AUTHORIZATION=basic_auth(analyst, "wrong password"))
    assert response.status_code == 401


def test_the_usage_api_accepts_an_api_key(client, analyst, connector):
    from connectors.accounts.api_keys import create_api_key

    _, key = create_api_key(analyst, "usage script")
    response = client.get(API.format(id=connector.pk), HTTP_AUTHORIZATION=f"ApiKey {key}")
    assert response.status_code == 200


def test_the_usage_api_only_answers_get(client, analyst, connector):
    response = client.post(API.format(id=connector.pk), HTTP_AUTHORIZATION=basic_auth(analyst))
    assert response.status_code == 405


def test_a_usage_viewer_cannot_open_configure_or_execute_connectors(client, analyst, connector):
    client.force_login(analyst)
    for url in (f"/connectors/{connector.pk}/", f"/connectors/{connector.pk}/edit/", "/connectors/"):
        assert client.get(url).status_code == 403, url
    execute = client.post(
        f"/api/actions/connector/{connector.pk}/_execute",
        data={"params": {"subAction": "test", "subActionParams": {"body": "{}"}}},
        content_type="application/json",
        HTTP_KBN_XSRF="true",
        HTTP_AUTHORIZATION=basic_auth(analyst),
    )
    assert execute.status_code == 403
    assert client.get(f"/api/actions/connector/{connector.pk}", HTTP_AUTHORIZATION=basic_auth(analyst)).status_code == 403
    html = client.get(f"/usage/connectors/{connector.pk}/").content.decode()
    assert "Search assistant" in html
    assert f'href="/connectors/{connector.pk}/"' not in html  # no link to a page the viewer may not open
    assert connector.api_key not in html and connector.encrypted_api_key not in html


def test_a_superuser_sees_the_link_to_the_connector_page(client, admin_user, connector):
    client.force_login(admin_user)
    html = client.get(f"/usage/connectors/{connector.pk}/").content.decode()
    assert f'href="/connectors/{connector.pk}/"' in html


# -- the link on the connector page ------------------------------------------------------------------------------

LINK = 'View OpenAI Usage Dashboard for "Search assistant" Connector'


def test_the_dashboard_link_is_shown_to_those_who_may_open_it(client, admin_user, operator, connector):
    client.force_login(admin_user)
    html = client.get(f"/connectors/{connector.pk}/").content.decode()
    assert LINK in html and f"/usage/connectors/{connector.pk}/" in html

    operator.groups.add(Group.objects.get(name="Usage viewers"))
    client.force_login(operator)
    html = client.get(f"/connectors/{connector.pk}/").content.decode()
    assert LINK in html


@pytest.mark.parametrize("persona", ["operator"])
def test_the_dashboard_link_is_hidden_from_those_who_may_not(client, personas, connector, persona):
    client.force_login(personas[persona])
    html = client.get(f"/connectors/{connector.pk}/").content.decode()
    # No dashboard link (connector admins do get /usage/ links of the governance panel: budgets, pricing).
    assert "Usage Dashboard" not in html and "/usage/connectors/" not in html.split("<main", 1)[1]
    assert client.get(f"/usage/connectors/{connector.pk}/").status_code == 403


# -- the dashboard -----------------------------------------------------------------------------------------------


def test_the_dashboard_shows_totals_charts_and_breakdowns(client, analyst, connector):
    client.force_login(analyst)
    response = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}")
    assert response.status_code == 200
    report = response.context["report"]
    events = list(ExecutionEvent.objects.filter(connector_id=connector.pk))
    assert report.totals.api_dict() == api_sums(events)
    html = response.content.decode()
    assert f'data-total="requests">{len(events):,}<' in html
    assert "Error rate" in html and "Median duration" in html and "p95 duration" in html
    assert "Cached tokens" in html and "Reasoning tokens" in html
    for chart_id in (
        "chart-tokens-over-time",
        "chart-cost-over-time",
        "chart-tokens-per-user",
        "chart-tokens-per-model",
        "chart-requests-by-outcome",
        "chart-duration-percentiles",
    ):
        assert f'id="{chart_id}"' in html
    assert "alice" in html and "gpt-4o-mini" in html
    assert "Times are in\n    <strong data-tz-label>UTC</strong>" in html


def test_every_figure_is_valid_for_plotly(client, analyst, connector):
    client.force_login(analyst)
    charts = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}").context["charts"]
    assert len(charts) == 6
    for chart in charts:
        figure = go.Figure(chart["figure"])  # raises on a property plotly does not know
        assert figure.data, chart["id"]
    tokens = charts[0]["figure"]["data"]
    report = connector_usage(connector.pk, parse_range({"from": "2025-03-01", "to": "2025-03-02"}))
    assert sum(tokens[0]["y"]) == report.totals.prompt_tokens
    assert sum(tokens[1]["y"]) == report.totals.completion_tokens


def test_plotly_js_is_served_from_this_server_never_a_cdn(client, analyst, connector):
    client.force_login(analyst)
    html = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}").content.decode()
    assert '<script src="/static/vendor/plotly.min.js"' in html
    assert "cdn" not in html.lower() and 'src="http' not in html
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert b"plotly.js" in b"".join(response.streaming_content)[:2000]


def test_collectstatic_copies_plotly_js(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", interactive=False, verbosity=0)
    assert (tmp_path / "vendor" / "plotly.min.js").stat().st_size > 1_000_000
    assert finders.find("vendor/plotly.min.js").endswith("plotly/package_data/plotly.min.js")
    assert finders.find("vendor/widgetbundle.js") is None  # only the one file is exposed


def test_the_dashboard_in_another_time_zone_is_labelled_and_keeps_it_in_links(client, analyst, connector):
    client.force_login(analyst)
    response = client.get(f"/usage/connectors/{connector.pk}/?range=30d&tz=Asia/Tokyo")
    html = response.content.decode()
    assert response.context["range"].bucket == "day"
    assert "<strong data-tz-label>Asia/Tokyo</strong>" in html
    assert "?range=24h&amp;tz=Asia%2FTokyo" in html
    assert "export.csv?range=30d&amp;tz=Asia%2FTokyo" in html


def test_an_empty_range_shows_an_empty_state_without_charts(client, analyst, make_connector):
    idle = make_connector(name="Idle connector")
    client.force_login(analyst)
    response = client.get(f"/usage/connectors/{idle.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "No executions in this range" in html and "data-usage-empty" in html
    assert "plotly.min.js" not in html and "data-plotly-figure" not in html
    assert "?range=90d" in html


def test_admins_see_the_note_on_the_usage_viewers_role(client, admin_user, analyst, django_user_model, connector):
    url = f"/usage/connectors/{connector.pk}/"
    client.force_login(admin_user)
    assert "Who can see usage dashboards" in client.get(url).content.decode()
    assert "Usage viewers" in client.get("/usage/").content.decode()

    client.force_login(analyst)
    assert "Who can see usage dashboards" not in client.get(url).content.decode()

    user_manager = django_user_model.objects.create_user("uma", password="x")
    user_manager.groups.add(Group.objects.get(name="Usage viewers"))
    user_manager.user_permissions.add(Permission.objects.get(codename="change_user"))
    client.force_login(user_manager)
    assert "Who can see usage dashboards" in client.get(url).content.decode()


def test_a_deleted_connector_keeps_its_dashboard(client, analyst):
    record(datetime(2025, 3, 1, 9, tzinfo=UTC), connector_id="deleted-one", connector_name="Retired bot", prompt_tokens=42)
    client.force_login(analyst)
    response = client.get(f"/usage/connectors/deleted-one/?{RANGE}")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Retired bot" in html and "Deleted connector" in html
    assert response.context["report"].totals.prompt_tokens == 42
    api = client.get(f"/api/usage/connectors/deleted-one?{RANGE}")
    assert api.status_code == 200 and api.json()["totals"]["prompt_tokens"] == 42
    assert "Retired bot" in client.get(f"/usage/?{RANGE}").content.decode()


@pytest.mark.parametrize("url", [*PAGES.values(), API])
def test_an_id_with_neither_connector_nor_usage_is_404(client, analyst, url):
    if url == "/usage/":
        return
    client.force_login(analyst)
    response = client.get(url.format(id="no-such-connector"))
    assert response.status_code == 404


def test_the_overview_lists_every_connector_with_totals_and_links(client, analyst, connector, make_connector):
    make_connector(name="Unused connector")
    client.force_login(analyst)
    response = client.get(f"/usage/?{RANGE}")
    html = response.content.decode()
    assert "Search assistant" in html and "Unused connector" in html
    assert f'href="/usage/connectors/{connector.pk}/?range=custom&amp;from=2025-03-01T00%3A00%3A00Z' in html
    rows = {row.connector.name: row for row in response.context["rows"]}
    events = ExecutionEvent.objects.filter(connector_id=connector.pk)
    assert rows["Search assistant"].sums.api_dict() == api_sums(list(events))


# -- bad parameters ----------------------------------------------------------------------------------------------

BAD_QUERIES = ["from=yesterday", "from=2025-03-02&to=2025-03-01", "range=2y", "tz=Not/AZone", "range=custom", "to=2025-99-01&from=2025-01-01"]


@pytest.mark.parametrize("query", BAD_QUERIES)
@pytest.mark.parametrize("page", PAGES)
def test_bad_parameters_are_a_clear_400_on_every_page(client, analyst, connector, page, query):
    client.force_login(analyst)
    response = client.get(PAGES[page].format(id=connector.pk) + "?" + query)
    assert response.status_code == 400
    text = body(response).decode()
    assert any(name in text for name in ("[from]", "[to]", "[range]", "[tz]"))


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_bad_parameters_are_a_400_in_kibanas_error_shape_on_the_api(client, analyst, connector, query):
    response = client.get(API.format(id=connector.pk) + "?" + query, HTTP_AUTHORIZATION=basic_auth(analyst))
    assert response.status_code == 400
    payload = response.json()
    assert payload["statusCode"] == 400 and payload["error"] == "Bad Request" and payload["message"].startswith("[")


# -- the JSON API ------------------------------------------------------------------------------------------------


def test_the_api_returns_the_documented_shape_with_exact_sums(client, analyst, connector):
    response = client.get(
        API.format(id=connector.pk) + "?from=2025-03-01T00:00:00Z&to=2025-03-02T00:00:00Z",
        HTTP_AUTHORIZATION=basic_auth(analyst),
    )
    assert response.status_code == 200
    payload = response.json()
    assert list(payload) == ["connector_id", "from", "to", "totals", "series", "by_user", "by_model", "by_api_key"]
    assert payload["connector_id"] == connector.pk
    assert (payload["from"], payload["to"]) == ("2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z")
    events = list(ExecutionEvent.objects.filter(connector_id=connector.pk, timestamp__lt=datetime(2025, 3, 2, tzinfo=UTC)))
    assert {k: v for k, v in payload["totals"].items() if k != "cost"} == api_sums(events)
    assert list(payload["totals"]) == ["requests", "failures", "prompt_tokens", "completion_tokens", "total_tokens",
                                       "cost"]
    assert len(payload["series"]) == 24
    for point in payload["series"]:
        assert list(point) == ["bucket", "prompt_tokens", "completion_tokens", "total_tokens", "requests", "failures",
                               "cost"]
        hour = datetime.fromisoformat(point["bucket"])
        in_hour = [e for e in events if hour <= e.timestamp < hour + timedelta(hours=1)]
        assert {k: v for k, v in point.items() if k not in ("bucket", "cost")} == api_sums(in_hour)
    assert sum(row["total_tokens"] for row in payload["by_user"]) == payload["totals"]["total_tokens"]
    assert {row["model"] for row in payload["by_model"]} == {e.model for e in events}
    for row in payload["by_user"]:
        assert row == {"user_name": row["user_name"], **api_sums([e for e in events if e.user_name == row["user_name"]]),
                       "cost": {"amount": "0.0000", "currency": "USD"}}


def test_the_api_buckets_follow_the_requested_time_zone(client, analyst, connector):
    response = client.get(
        API.format(id=connector.pk) + "?from=2025-03-01&to=2025-03-01&tz=America/New_York",
        HTTP_AUTHORIZATION=basic_auth(analyst),
    )
    payload = response.json()
    assert payload["from"] == "2025-03-01T00:00:00-05:00" and payload["to"] == "2025-03-02T00:00:00-05:00"
    assert payload["series"][0]["bucket"] == "2025-03-01T00:00:00-05:00"


def test_the_api_defaults_to_the_last_seven_days(client, analyst, make_connector):
    fresh = make_connector(name="Fresh")
    record(timezone.now() - timedelta(hours=2), connector_id=fresh.pk, prompt_tokens=3, completion_tokens=4)
    record(timezone.now() - timedelta(days=8), connector_id=fresh.pk, prompt_tokens=100)
    payload = client.get(API.format(id=fresh.pk), HTTP_AUTHORIZATION=basic_auth(analyst)).json()
    assert payload["totals"]["total_tokens"] == 7 and len(payload["series"]) == 7 * 24


# -- CSV exports -------------------------------------------------------------------------------------------------


def test_the_series_export_has_one_row_per_bucket_with_exact_sums(client, analyst, connector):
    client.force_login(analyst)
    response = client.get(f"/usage/connectors/{connector.pk}/export.csv?{RANGE}&tz=Europe/Paris")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="usage-series-')
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    report = connector_usage(connector.pk, parse_range({"from": "2025-03-01", "to": "2025-03-02", "tz": "Europe/Paris"}))
    assert len(rows) == len(report.series) == 48
    assert rows[0]["bucket"] == "2025-03-01T00:00:00+01:00"
    for row, point in zip(rows, report.series, strict=True):
        assert int(row["requests"]) == point.sums.requests and int(row["failures"]) == point.sums.failures
        assert int(row["prompt_tokens"]) == point.sums.prompt_tokens
        assert int(row["total_tokens"]) == point.sums.total_tokens
        assert int(row["cached_tokens"]) == point.sums.cached_tokens
    # Paris is UTC+1 in March: the range is 2025-02-28 23:00 to 2025-03-02 23:00 UTC and holds every event.
    assert sum(int(row["requests"]) for row in rows) == ExecutionEvent.objects.filter(connector_id=connector.pk).count()


def test_the_raw_export_streams_the_events_of_the_range(client, analyst, connector):
    record(datetime(2025, 3, 1, 7, tzinfo=UTC), connector_id=connector.pk, user_name="=HYPERLINK(\"http://evil\")", error_message="+1 boom")
    record(datetime(2025, 2, 27, tzinfo=UTC), connector_id=connector.pk, user_name="outside the range")
    client.force_login(analyst)
    response = client.get(f"/usage/connectors/{connector.pk}/events.csv?{RANGE}")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].startswith('attachment; filename="usage-events-')
    rows = list(csv.DictReader(io.StringIO(body(response).decode())))
    expected = ExecutionEvent.objects.filter(connector_id=connector.pk, timestamp__gte=datetime(2025, 3, 1, tzinfo=UTC))
    assert len(rows) == expected.count()
    moments = [datetime.fromisoformat(row["timestamp"]) for row in rows]
    assert moments == sorted(moments)
    assert "outside the range" not in {row["user_name"] for row in rows}
    assert sum(int(row["total_tokens"]) for row in rows) == sum(e.total_tokens for e in expected)
    injected = next(row for row in rows if "HYPERLINK" in row["user_name"])
    assert injected["user_name"].startswith("'=") and injected["error_message"] == "'+1 boom"


def test_the_raw_export_streams_asynchronously_under_asgi(async_client, analyst, connector):
    async def fetch():
        await async_client.aforce_login(analyst)
        response = await async_client.get(f"/usage/connectors/{connector.pk}/events.csv?{RANGE}")
        chunks = [chunk async for chunk in response.streaming_content]
        return response, chunks

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response, chunks = async_to_sync(fetch)()
    assert response.status_code == 200 and response.is_async
    # One chunk per CSV line: nothing was read whole into memory first (Django warns when it has to).
    assert len(chunks) == ExecutionEvent.objects.filter(connector_id=connector.pk).count() + 1
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]


def test_api_json_is_plain_json(client, analyst, connector):
    response = client.get(API.format(id=connector.pk) + "?" + RANGE, HTTP_AUTHORIZATION=basic_auth(analyst))
    assert response["Content-Type"] == "application/json"
    json.loads(response.content)


# -- dashboards you can slice --------------------------------------------------------------------------


def test_a_user_and_model_filter_narrows_the_dashboard_csv_and_json_and_stays_in_the_links(client, analyst, connector):
    events = ExecutionEvent.objects.filter(connector_id=connector.pk, user_name="alice")
    alice = sum(e.total_tokens for e in events)
    model = "gpt-4o-2024-08-06"  # the model the provider reported, as the rollups key it
    alice_4o = sum(e.total_tokens for e in events if (e.response_model or e.requested_model) == model)
    assert 0 < alice_4o < alice
    client.force_login(analyst)
    html = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}&user=alice").content.decode()
    assert f'data-total="total_tokens">{alice:,}<' in html
    assert "user=alice" in re.search(r'href="([^"]+)"\s+data-range="24h"', html).group(1)
    assert "user=alice" in re.search(r'href="([^"]+)" download data-export="series"', html).group(1)
    assert 'name="user" value="alice"' in html and "data-clear-slice" in html
    sliced = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}&user=alice&model={model}").content.decode()
    assert f'data-total="total_tokens">{alice_4o:,}<' in sliced
    rows = list(csv.DictReader(io.StringIO(client.get(
        f"/usage/connectors/{connector.pk}/export.csv?{RANGE}&user=alice&model={model}").content.decode())))
    assert sum(int(row["total_tokens"]) for row in rows) == alice_4o
    payload = client.get(f"/api/usage/connectors/{connector.pk}?{RANGE}&user=alice").json()
    assert payload["totals"]["total_tokens"] == alice and [u["user_name"] for u in payload["by_user"]] == ["alice"]


def test_the_overview_shows_kibanas_two_per_user_charts_across_connectors(client, analyst, connector, make_connector):
    other = make_connector(name="Second")
    record(datetime(2025, 3, 1, 9, tzinfo=UTC), connector_id=other.pk, user_name="zed", prompt_tokens=100, completion_tokens=1)
    client.force_login(analyst)
    response = client.get(f"/usage/?{RANGE}")
    html = response.content.decode()
    assert "Prompt + completion tokens per user" in html and "Total tokens per user" in html
    by_user = {row.key: row.sums.total_tokens for row in response.context["by_user"]}
    expected = {}
    for event in ExecutionEvent.objects.all():
        expected[event.user_name] = expected.get(event.user_name, 0) + event.total_tokens
    assert by_user == expected and by_user["zed"] == 101
    sliced = client.get(f"/usage/?{RANGE}&user=zed")
    rows = {row.connector.name: row.sums.total_tokens for row in sliced.context["rows"]}
    assert rows == {"Search assistant": 0, "Second": 101}


def test_the_overview_figures_are_valid_plotly_figures(connector):
    from usage.dashboards import charts
    from usage.dashboards.queries import usage_breakdown

    by_user = usage_breakdown(None, parse_range({"from": "2025-03-01", "to": "2025-03-02"}), "user_name")
    for chart in charts.overview_charts(by_user):
        go.Figure(chart["figure"])  # raises on a property plotly does not know
    totals = charts.total_tokens_per_user(by_user)["data"][0]
    assert list(reversed(totals["x"])) == [row.sums.total_tokens for row in by_user]


def test_an_api_key_filter_narrows_the_dashboard_the_overview_and_the_json_to_the_keys_calls(
        client, analyst, connector, django_user_model):
    from connectors.accounts.api_keys import create_api_key

    owner = django_user_model.objects.create_user("keyholder")
    key, _ = create_api_key(owner, "nightly batch")
    keyed = list(ExecutionEvent.objects.filter(connector_id=connector.pk, user_name="bob"))
    ExecutionEvent.objects.filter(pk__in=[e.pk for e in keyed]).update(api_key=key)
    rebuild_rollups()  # the rollups are keyed by API key: re-derived from the events changed behind their back
    tokens = sum(e.total_tokens for e in keyed)
    assert 0 < tokens < sum(e.total_tokens for e in ExecutionEvent.objects.filter(connector_id=connector.pk))
    client.force_login(analyst)

    html = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}&api_key={key.pk}").content.decode()
    assert f'data-total="total_tokens">{tokens:,}<' in html
    assert f'<option value="{key.pk}" selected>nightly batch' in html
    assert "calls made with API key <strong>nightly batch" in html and "data-clear-slice" in html
    assert f"api_key={key.pk}" in re.search(r'href="([^"]+)" download data-export="series"', html).group(1)
    overview = client.get(f"/usage/?{RANGE}&api_key={key.pk}")
    assert {row.connector.id: row.sums.total_tokens for row in overview.context["rows"]}[connector.pk] == tokens
    payload = client.get(f"/api/usage/connectors/{connector.pk}?{RANGE}&api_key={key.pk}").json()
    assert payload["totals"]["total_tokens"] == tokens
    # Not an id: no filter, not an error.
    unfiltered = client.get(f"/usage/connectors/{connector.pk}/?{RANGE}&api_key=nightly")
    assert unfiltered.status_code == 200 and "data-clear-slice" not in unfiltered.content.decode()
