"""The connector list: search, provider filter, sorting, pagination, per-row usage, duplicates, bulk delete."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connectors.models import Connector, Provider
from tests.core.test_preconfigured import PRECONFIGURED
from tests.helpers.events import record

pytestmark = pytest.mark.django_db


def listed_ids(response) -> list[str]:
    return re.findall(r'<tr data-connector="([^"]+)"', response.content.decode())


@pytest.fixture
def three(make_connector):
    return {
        "alpha": make_connector(name="Alpha", default_model="gpt-4.1"),
        "beta": make_connector(name="Beta", provider=Provider.OTHER, api_url="http://llm.internal.example/v1/chat/completions",
                               default_model="llama3", api_key=""),
        "gamma": make_connector(name="Gamma"),
    }


def test_search_matches_name_url_host_and_model(client, connector_admin, three):
    client.force_login(connector_admin)
    assert listed_ids(client.get("/connectors/?q=alp")) == [three["alpha"].pk]
    assert listed_ids(client.get("/connectors/?q=internal.example")) == [three["beta"].pk]
    assert listed_ids(client.get("/connectors/?q=LLAMA")) == [three["beta"].pk]
    assert "No connector matches" in client.get("/connectors/?q=zzz").content.decode()


def test_the_provider_filter(client, connector_admin, three):
    client.force_login(connector_admin)
    assert listed_ids(client.get("/connectors/?provider=Other")) == [three["beta"].pk]


def test_every_column_sorts_both_ways(client, connector_admin, three):
    now = timezone.now()
    for _ in range(3):
        record(now, connector_id=three["gamma"].pk)
    record(now - timedelta(minutes=5), connector_id=three["alpha"].pk, outcome="failure")
    client.force_login(connector_admin)
    a, b, g = three["alpha"].pk, three["beta"].pk, three["gamma"].pk
    assert listed_ids(client.get("/connectors/?sort=name")) == [a, b, g]
    assert listed_ids(client.get("/connectors/?sort=-name")) == [g, b, a]
    assert listed_ids(client.get("/connectors/?sort=-requests")) == [g, a, b]
    assert listed_ids(client.get("/connectors/?sort=-error_rate")) == [a, g, b]
    assert listed_ids(client.get("/connectors/?sort=-last")) == [g, a, b]
    assert listed_ids(client.get("/connectors/?sort=model"))[0] == a  # gpt-4.1 < gpt-4o < llama3
    assert listed_ids(client.get("/connectors/?sort=host"))[0] == a
    for key in ("provider", "tokens", "created", "nonsense"):
        assert client.get(f"/connectors/?sort={key}").status_code == 200
    html = client.get("/connectors/?sort=-requests").content.decode()
    assert 'aria-sort="descending"' in html


def test_per_row_usage_of_the_last_24_hours_and_the_last_execution(client, connector_admin, three):
    now = timezone.now()
    record(now - timedelta(hours=30), connector_id=three["alpha"].pk)  # outside the 24 hours
    record(now - timedelta(minutes=2), connector_id=three["alpha"].pk, prompt_tokens=100, completion_tokens=20)
    record(now - timedelta(minutes=1), connector_id=three["alpha"].pk, outcome="failure", prompt_tokens=0, completion_tokens=0)
    client.force_login(connector_admin)
    html = client.get("/connectors/").content.decode()
    row = re.search(rf'<tr data-connector="{three["alpha"].pk}">(.*?)</tr>', html, re.S).group(1)
    assert re.search(r"data-requests>2<", row) and re.search(r"data-tokens>120<", row)
    assert "50.00 %" in row and "health-failure" in row
    assert "Never" in re.search(rf'<tr data-connector="{three["beta"].pk}">(.*?)</tr>', html, re.S).group(1)


def test_the_list_makes_the_same_number_of_queries_for_3_or_30_connectors(client, connector_admin, make_connector):
    client.force_login(connector_admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/connectors/?sort=-last").status_code == 200
        return len(captured)

    for index in range(3):
        record(timezone.now(), connector_id=make_connector(name=f"c{index}").pk)
    queries()  # the first request also reads the list of spaces, which the process then keeps (spaces/directory.py)
    few = queries()
    for index in range(27):
        record(timezone.now(), connector_id=make_connector(name=f"d{index}").pk)
    assert queries() == few


def test_pagination_keeps_the_search_and_sort(client, connector_admin, make_connector):
    for index in range(30):
        make_connector(name=f"Bulk {index:02d}")
    client.force_login(connector_admin)
    first = client.get("/connectors/?q=bulk&sort=-name")
    assert len(listed_ids(first)) == 25
    next_url = re.search(r'href="([^"]+)" rel="next"', first.content.decode()).group(1).replace("&amp;", "&")
    assert "q=bulk" in next_url and "sort=-name" in next_url
    second = client.get("/connectors/" + next_url)
    assert len(listed_ids(second)) == 5 and "Bulk 00" in second.content.decode()


def test_duplicate_names_are_told_apart_by_host_and_id_suffix(client, connector_admin, make_connector):
    one = make_connector(name="Same")
    two = make_connector(name="same", provider=Provider.OTHER, api_url="http://other.example/v1/chat/completions",
                         default_model="m", api_key="")
    make_connector(name="Unique")
    client.force_login(connector_admin)
    html = client.get("/connectors/").content.decode()
    assert f"api.openai.com · id …{one.pk[-6:]}" in html and f"other.example · id …{two.pk[-6:]}" in html
    assert html.count("data-disambiguation") == 2


def test_row_actions_follow_the_permissions(client, personas, three):
    client.force_login(personas["connector_admin"])
    html = client.get("/connectors/").content.decode()
    for action in ("test", "logs", "dashboard", "edit"):
        assert f'data-action="{action}"' in html
    client.force_login(personas["operator"])
    html = client.get("/connectors/").content.decode()
    assert 'data-action="test"' in html and 'data-action="logs"' in html
    assert 'data-action="edit"' not in html and 'data-action="dashboard"' not in html and 'name="ids"' not in html


def test_bulk_delete_asks_once_then_deletes_and_never_takes_a_preconfigured_one(client, connector_admin, three, actions_config):
    actions_config(PRECONFIGURED)
    client.force_login(connector_admin)
    html = client.get("/connectors/").content.decode()
    assert 'value="team-openai"' not in html and f'name="ids" value="{three["alpha"].pk}"' in html
    ids = [three["alpha"].pk, three["gamma"].pk, "team-openai"]
    confirm = client.post("/connectors/delete-selected/", {"ids": ids})
    text = confirm.content.decode()
    assert confirm.status_code == 200 and "Delete 2 connectors?" in text and "Team OpenAI" not in text
    assert Connector.objects.count() == 3
    response = client.post("/connectors/delete-selected/", {"ids": ids, "confirm": "1"}, follow=True)
    assert list(Connector.objects.values_list("name", flat=True)) == ["Beta"]
    assert "Deleted 2 connectors" in response.content.decode()


def test_bulk_delete_needs_the_delete_permission_and_a_selection(client, personas, three):
    client.force_login(personas["operator"])
    response = client.post("/connectors/delete-selected/", {"ids": [three["alpha"].pk], "confirm": "1"})
    assert response.status_code == 403 and "connectors.delete_connector" in response.content.decode()
    assert Connector.objects.count() == 3
    client.force_login(personas["connector_admin"])
    response = client.post("/connectors/delete-selected/", {}, follow=True)
    assert "Select the connectors to delete first" in response.content.decode()
    assert client.get("/connectors/delete-selected/").status_code == 405
