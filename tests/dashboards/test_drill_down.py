"""From the dashboards to the calls behind them (usage/dashboards/drill_down.py): every chart point and table row
links to the Logs tab with the matching range, zone and filters; the overview's total row and cost over time."""

import datetime as dt
import json
import re
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from connectors.accounts.api_keys import create_api_key
from tests.helpers.events import record

pytestmark = pytest.mark.django_db


def figures(page: str) -> dict:
    found = re.findall(r'<div id="([^"]+)" class="usage-plot"[^>]*></div>\s*<script[^>]*>(.*?)</script>', page, re.S)
    return {chart_id: json.loads(body) for chart_id, body in found}


def rows_shown(client, url: str) -> int:
    return client.get(url).content.decode().count("<tr data-event=")


@pytest.fixture
def busy(make_connector, operator):
    connector = make_connector(name="Drilled")
    key, _ = create_api_key(operator, "ci")
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    record(hour + dt.timedelta(minutes=5), connector_id=connector.pk, user_name="alice", requested_model="gpt-4o")
    record(hour + dt.timedelta(minutes=50), connector_id=connector.pk, user_name="bob", requested_model="o3-mini",
           outcome="failure", api_key=key)
    record(hour + dt.timedelta(hours=1, minutes=5), connector_id=connector.pk, user_name="alice",
           requested_model="gpt-4o", cost_nanos=1_000_000_000)
    return connector, hour, key


def test_a_chart_point_leads_to_the_calls_of_its_hour(client, analyst, busy):
    connector, hour, _ = busy
    client.force_login(analyst)
    page = client.get(f"/usage/connectors/{connector.pk}/?range=24h&tz=Europe/Paris").content.decode()
    chart = figures(page)["chart-tokens-over-time"]
    links = chart["data"][0]["customdata"]
    assert len(links) == len(chart["data"][0]["x"])
    start = hour.astimezone(ZoneInfo("Europe/Paris"))
    url = next(link for link in links if f"from={start:%Y-%m-%dT%H}%3A00" in link)
    assert url.startswith(f"/connectors/{connector.pk}/logs/?range=custom&") and "tz=Europe%2FParis" in url
    assert rows_shown(client, url) == 2  # the two calls of that hour, not the one after it
    failures = figures(page)["chart-requests-by-outcome"]["data"][1]["customdata"]
    assert all("outcome=failure" in link for link in failures)


def test_each_breakdown_row_leads_to_its_calls(client, analyst, busy):
    connector, _, key = busy
    client.force_login(analyst)
    page = unescape(client.get(f"/usage/connectors/{connector.pk}/?range=24h").content.decode())
    alice = re.search(r'href="([^"]*user=alice[^"]*)"', page).group(1)
    assert alice.startswith(f"/connectors/{connector.pk}/logs/?range=24h")
    assert rows_shown(client, alice) == 2
    by_key = re.search(rf'href="([^"]*api_key={key.pk}[^"]*)"', page).group(1)
    logs = client.get(by_key).content.decode()
    assert logs.count("<tr data-event=") == 1 and "data-api-key-filter" in logs and "ci" in logs
    model_links = figures(client.get(f"/usage/connectors/{connector.pk}/?range=24h").content.decode())[
        "chart-tokens-per-model"]["data"][0]["customdata"]
    assert any("model=o3-mini" in link for link in model_links)


def test_the_overview_has_a_total_cost_over_time_and_links_to_each_connectors_calls(client, analyst, busy,
                                                                                    make_connector):
    connector, _, _ = busy
    other = make_connector(name="Quiet")
    record(timezone.now() - dt.timedelta(minutes=10), connector_id=other.pk, cost_nanos=500_000_000)
    client.force_login(analyst)
    page = client.get("/usage/?range=24h").content.decode()
    total = re.search(r"<tr class=\"usage-total\" data-total>(.*?)</tr>", page, re.S).group(1)
    assert ">4<" in total  # requests of both connectors
    assert "1.5" in total  # cost: 1 + 0.5
    assert "chart-cost-over-time" in figures(page)
    assert f'href="/connectors/{connector.pk}/logs/?range=24h' in unescape(page)
    users = figures(page)["chart-user-total"]["data"][0]["customdata"]
    assert any(link.startswith("/usage/?") and "user=alice" in link for link in users)


def test_a_bad_api_key_filter_is_a_clear_error(client, analyst, busy):
    connector, _, _ = busy
    client.force_login(analyst)
    response = client.get(f"/connectors/{connector.pk}/logs/?api_key=abc")
    assert response.status_code == 400 and "[api_key]" in response.content.decode()


def test_my_usage_rows_lead_to_my_calls_on_each_connector(client, operator, make_connector):
    connector = make_connector(name="Mine")
    record(timezone.now() - dt.timedelta(minutes=5), connector_id=connector.pk, user=operator,
           user_name=operator.username)
    client.force_login(operator)
    page = unescape(client.get("/usage/me/?range=24h").content.decode())
    url = re.search(rf'href="(/connectors/{connector.pk}/logs/\?[^"]+)"', page).group(1)
    assert "range=24h" in url and rows_shown(client, url) == 1


def test_a_bucket_link_keeps_the_slice_and_a_filter_of_the_same_name_replaces_it():
    from urllib.parse import parse_qs, urlsplit

    from usage.dashboards.drill_down import DrillDown
    from usage.dashboards.queries import UsageSlice
    from usage.ranges import parse_range

    links = DrillDown(parse_range({"range": "7d", "tz": "America/New_York"}), UsageSlice(user="a&b c", api_key=7),
                      "conn-1")
    bucket = timezone.now().replace(hour=5, minute=0, second=0, microsecond=0)
    plain, failures = links.bucket(bucket), links.bucket(bucket, outcome="failure")
    assert failures == plain + "&outcome=failure"  # the bucket's query, encoded once, is shared
    query = parse_qs(urlsplit(failures).query)
    assert urlsplit(failures).path == "/connectors/conn-1/logs/"
    assert query["user"] == ["a&b c"] and query["api_key"] == ["7"] and query["tz"] == ["America/New_York"]
    assert query["range"] == ["custom"] and query["outcome"] == ["failure"]
    other_user = parse_qs(urlsplit(links.bucket(bucket, user="zoe")).query)
    assert other_user["user"] == ["zoe"] and other_user["api_key"] == ["7"]
