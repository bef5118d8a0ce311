"""A stored API key stays with the origin (scheme, host, port) it was entered for: a connector whose URL moves to
another server needs its key again, in the form and in Kibana's update API."""

import json

import pytest
from django.urls import reverse

from connectors.models import Connector
from tests.conftest import basic_auth
from tests.servers.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db

TEAM_KEY = "sk-team-SECRET-0123456789abcdef"
OWN_KEY = "sk-own-key-0123456789abcdef"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"


@pytest.fixture
def other_server():
    """A second real server: the one a Connector admin would like the team's key to reach."""
    server = FakeOpenAI().start()
    yield server
    server.stop()


def put(client, user, connector, body):
    return client.put(f"/api/actions/connector/{connector.pk}", json.dumps(body), content_type="application/json",
                      HTTP_AUTHORIZATION=basic_auth(user), HTTP_KBN_XSRF="true")


def run(client, user, connector):
    params = {"params": {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": [
        {"role": "user", "content": "hi"}]})}}}
    return client.post(f"/api/actions/connector/{connector.pk}/_execute", json.dumps(params),
                       content_type="application/json", HTTP_AUTHORIZATION=basic_auth(user), HTTP_KBN_XSRF="true")


def form(connector, **overrides):
    data = {"name": connector.name, "provider": connector.provider, "api_url": connector.api_url,
            "default_model": connector.default_model, "organization_id": "", "project_id": "", "headers": "",
            "api_key": ""}
    data.update(overrides)
    return data


MOVED = [
    pytest.param("https://api.openai.com.evil.example/v1/chat/completions", id="host"),
    pytest.param("http://api.openai.com/v1/chat/completions", id="scheme"),
    pytest.param("https://api.openai.com:8443/v1/chat/completions", id="port"),
]
SAME_ORIGIN = [
    pytest.param("https://api.openai.com/v2/chat/completions", id="path"),
    pytest.param("https://API.OpenAI.com:443/v1/chat/completions?x=1", id="case-and-default-port"),
]


@pytest.mark.parametrize("new_url", MOVED)
def test_the_api_refuses_to_move_the_stored_key_to_another_origin(client, connector_admin, make_connector, new_url):
    connector = make_connector(api_url=OPENAI_URL, api_key=TEAM_KEY)
    response = put(client, connector_admin, connector,
                   {"name": connector.name, "config": {"apiProvider": "OpenAI", "apiUrl": new_url}})
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("error validating action type secrets: [apiKey]: expected value of type [string] but "
                              "got [undefined]")
    assert "another scheme, host or port" in message and "secrets.apiKey" in message
    assert TEAM_KEY not in response.content.decode()
    stored = Connector.objects.get(pk=connector.pk)
    assert stored.api_url == OPENAI_URL and stored.api_key == TEAM_KEY


@pytest.mark.parametrize("new_url", SAME_ORIGIN)
def test_the_api_keeps_the_key_when_the_origin_stays(client, connector_admin, make_connector, new_url):
    connector = make_connector(api_url=OPENAI_URL, api_key=TEAM_KEY)
    response = put(client, connector_admin, connector,
                   {"name": connector.name, "config": {"apiProvider": "OpenAI", "apiUrl": new_url}})
    assert response.status_code == 200, response.content
    stored = Connector.objects.get(pk=connector.pk)
    assert stored.api_url == new_url and stored.api_key == TEAM_KEY


def test_the_key_never_reaches_the_other_server(client, connector_admin, make_connector, fake_openai, other_server):
    connector = make_connector(api_url=fake_openai.url("ok"), api_key=TEAM_KEY)
    config = {"apiProvider": "OpenAI", "apiUrl": other_server.url("ok")}  # same host, another port

    refused = put(client, connector_admin, connector, {"name": connector.name, "config": config})
    assert refused.status_code == 400
    assert run(client, connector_admin, connector).json()["status"] == "ok"
    assert other_server.requests == []
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {TEAM_KEY}"

    # With a key of their own the move is allowed, and only that key goes to the new server.
    moved = put(client, connector_admin, connector,
                {"name": connector.name, "config": config, "secrets": {"apiKey": OWN_KEY}})
    assert moved.status_code == 200, moved.content
    assert run(client, connector_admin, connector).json()["status"] == "ok"
    assert [r.headers["authorization"] for r in other_server.requests] == [f"Bearer {OWN_KEY}"]


@pytest.mark.parametrize("new_url", MOVED)
def test_the_form_asks_for_the_key_again_when_the_origin_changes(client, connector_admin, make_connector, new_url):
    connector = make_connector(api_url=OPENAI_URL, api_key=TEAM_KEY)
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:edit", args=[connector.pk]), form(connector, api_url=new_url))
    assert response.status_code == 200  # the form again, with its error
    html = response.content.decode()
    assert "The URL now reaches another server (its scheme, host or port changed): enter the API key again." in html
    assert TEAM_KEY not in html
    stored = Connector.objects.get(pk=connector.pk)
    assert stored.api_url == OPENAI_URL and stored.api_key == TEAM_KEY


@pytest.mark.parametrize("new_url", SAME_ORIGIN)
def test_the_form_keeps_the_key_when_the_origin_stays(client, connector_admin, make_connector, new_url):
    connector = make_connector(api_url=OPENAI_URL, api_key=TEAM_KEY)
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:edit", args=[connector.pk]), form(connector, api_url=new_url))
    assert response.status_code == 302
    stored = Connector.objects.get(pk=connector.pk)
    assert stored.api_url == new_url and stored.api_key == TEAM_KEY


def test_the_form_moves_the_connector_with_a_key_typed_again(client, connector_admin, make_connector, fake_openai,
                                                             other_server):
    connector = make_connector(api_url=fake_openai.url("ok"), api_key=TEAM_KEY)
    client.force_login(connector_admin)
    response = client.post(reverse("connectors:edit", args=[connector.pk]),
                           form(connector, api_url=other_server.url("ok"), api_key=OWN_KEY))
    assert response.status_code == 302
    assert run(client, connector_admin, connector).json()["status"] == "ok"
    assert [r.headers["authorization"] for r in other_server.requests] == [f"Bearer {OWN_KEY}"]


def test_the_edit_form_says_when_a_blank_key_is_kept(client, connector_admin, make_connector):
    connector = make_connector(api_key=TEAM_KEY)
    client.force_login(connector_admin)
    html = client.get(reverse("connectors:edit", args=[connector.pk])).content.decode()
    assert "a URL on another scheme, host or port needs it again" in html


def test_a_keyless_connector_may_move_freely(client, connector_admin, make_connector, fake_openai, other_server):
    connector = make_connector(provider="Other", api_url=fake_openai.url("ok"), default_model="llama3", api_key="")
    body = {"name": connector.name, "config": {"apiProvider": "Other", "apiUrl": other_server.url("ok"),
                                               "defaultModel": "llama3"}}
    assert put(client, connector_admin, connector, body).status_code == 200
