"""Preconfigured connectors from ACTIONS_CONFIG: listed, marked read-only, never editable from the UI."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from connectors.models import Connector
from connectors.preconfigured import preconfigured_connectors

pytestmark = pytest.mark.django_db

PRECONFIGURED = {"preconfigured": {"team-openai": {
    "name": "Team OpenAI", "actionTypeId": ".gen-ai",
    "config": {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions", "defaultModel": "gpt-4o-mini"},
    "secrets": {"apiKey": "sk-team-SECRET"},
}}}


@pytest.fixture
def team_openai(actions_config):
    actions_config(PRECONFIGURED)
    return preconfigured_connectors()["team-openai"]


def test_listed_with_a_read_only_mark(client, connector_admin, team_openai, make_connector):
    make_connector(name="Stored one")
    client.force_login(connector_admin)
    html = client.get("/connectors/").content.decode()
    assert "Team OpenAI" in html and "Stored one" in html and "Preconfigured" in html
    assert "sk-team-SECRET" not in html


def test_its_page_offers_no_edit_or_delete(client, connector_admin, team_openai):
    client.force_login(connector_admin)
    html = client.get("/connectors/team-openai/").content.decode()
    assert "read-only" in html
    assert "/connectors/team-openai/edit/" not in html and "/connectors/team-openai/delete/" not in html
    assert "sk-team-SECRET" not in html


@pytest.mark.parametrize("action", ["edit", "delete"])
def test_edit_and_delete_are_refused_with_a_message(client, connector_admin, team_openai, action):
    client.force_login(connector_admin)
    response = client.post(f"/connectors/team-openai/{action}/", {"name": "Hijacked"}, follow=True)
    assert response.redirect_chain[-1][0] == "/connectors/team-openai/"
    assert "cannot be changed here" in response.content.decode()
    assert preconfigured_connectors()["team-openai"].name == "Team OpenAI"
    assert not Connector.objects.exists()


def test_an_invalid_preconfigured_connector_stops_start_up(actions_config):
    bad = {"preconfigured": {"broken": {"name": "Broken", "actionTypeId": ".gen-ai",
                                        "config": {"apiProvider": "Other", "apiUrl": "ftp://nowhere"}, "secrets": {}}}}
    actions_config(bad)
    with pytest.raises(ImproperlyConfigured, match=r"preconfigured\.broken: api_url"):
        preconfigured_connectors()


def test_a_preconfigured_key_that_cannot_go_in_a_header_stops_start_up(actions_config):
    actions_config({"preconfigured": {"bad-key": {
        "name": "Bad key", "actionTypeId": ".gen-ai",
        "config": {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions"},
        "secrets": {"apiKey": "sk-abc\nInjected: header"}}}})
    with pytest.raises(ImproperlyConfigured, match=r"preconfigured\.bad-key: secrets\.apiKey") as failure:
        preconfigured_connectors()
    assert "Injected" not in str(failure.value)
