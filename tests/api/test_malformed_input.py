"""malformed input of every kind gets a clear 400 (or Kibana's error envelope for bad params),
never a 500 or a 502 "internal error", and nothing half-stored. Run on SQLite and on PostgreSQL, which refuses NUL
in text."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from connectors.accounts.api_keys import create_api_key
from connectors.models import Connector
from tests.conftest import basic_auth
from usage.models import ExecutionEvent

pytest_plugins = ["tests.servers.asgi_server"]

NESTED = "[" * 100_000
CONFIG = {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions"}
CREATE = {"name": "Malformed", "connector_type_id": ".gen-ai", "config": CONFIG, "secrets": {"apiKey": "sk-malformed-0123456789"}}
HELLO = json.dumps({"messages": [{"role": "user", "content": "hi"}]})


def api(server, method, path, user, **kwargs):
    headers = {"kbn-xsrf": "true", "Authorization": basic_auth(user), **kwargs.pop("headers", {})}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=20, **kwargs)


# --- deeply nested JSON ----------------------------------------------------------------------------------------
def test_deeply_nested_json_is_a_400_on_create_and_update(asgi_live_server, connector_admin, make_connector):
    created = api(asgi_live_server, "POST", "/api/actions/connector", connector_admin, content=NESTED)
    connector = make_connector()
    updated = api(asgi_live_server, "PUT", f"/api/actions/connector/{connector.pk}", connector_admin, content=NESTED)
    for response in (created, updated):
        assert response.status_code == 400
        assert "nested more than 100 levels deep" in response.json()["message"]
    assert Connector.objects.count() == 1


def test_deeply_nested_json_on_execute_and_stream_is_a_400_or_an_error_envelope(asgi_live_server, recorded_events,
                                                                                operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    path = f"/api/actions/connector/{connector.pk}/_execute"
    whole = api(asgi_live_server, "POST", path, operator, content=NESTED)
    assert whole.status_code == 400 and "nested more than 100 levels deep" in whole.json()["message"]
    for sub_action, extra in (("run", {}), ("stream", {"stream": True}), ("stream", {"stream": False})):
        params = {"subAction": sub_action, "subActionParams": {"body": NESTED, **extra}}
        response = api(asgi_live_server, "POST", path, operator, json={"params": params})
        assert response.status_code == 200
        envelope = response.json()
        # Kibana's sub-action validation error: thrown while running, the reason in service_message.
        assert envelope["status"] == "error" and "[body]" in envelope["service_message"]
        assert "nested more than 100 levels deep" in envelope["service_message"]
    recorded_events.wait_for(4)
    assert not fake_openai.requests


def test_deeply_nested_json_on_the_openai_endpoint_is_a_400(asgi_live_server, recorded_events, operator, make_connector,
                                                             fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    key = create_api_key(operator, "sdk")[1]
    response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions", content=NESTED,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code == 400 and "nested more than 100 levels deep" in response.json()["error"]["message"]
    recorded_events.wait_for(1)


def test_deeply_nested_json_in_the_test_panel_is_a_400(client, operator, make_connector):
    connector = make_connector()
    client.force_login(operator)
    response = client.post(f"/connectors/{connector.pk}/test/", NESTED, content_type="application/json")
    assert response.status_code == 400
    panel = client.post(f"/connectors/{connector.pk}/test/", json.dumps({"body": NESTED}), content_type="application/json")
    assert panel.status_code == 200 and "nested more than 100 levels deep" in panel.json()["service_message"]


@pytest.mark.parametrize("body, expected", [
    ('{"messages": [{"role": "user", "content": "\\ud800"}]}', "lone surrogate"),
    ('{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "NaN is not valid JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}', "too large"),
    ('{"messages": [{"role": "user", "content": "hi"}], "model": "gpt\\u0000x"}', "'model'"),
    ('{"messages": [{"role": "user", "content": "hi"}], "model": 42}', "'model'"),
])
def test_unusable_json_on_the_openai_endpoint_is_a_400_not_a_502(asgi_live_server, recorded_events, operator,
                                                                  make_connector, fake_openai, body, expected):
    connector = make_connector(api_url=fake_openai.url("ok"))
    key = create_api_key(operator, "sdk")[1]
    response = httpx.post(f"{asgi_live_server.url}/api/openai/{connector.pk}/v1/chat/completions", content=body,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code == 400 and expected in response.json()["error"]["message"]
    assert not fake_openai.requests
    recorded_events.wait_for(1)


def test_a_nul_in_the_model_of_an_execute_body_is_an_error_envelope(asgi_live_server, recorded_events, operator,
                                                                    make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    body = json.dumps({"model": "gpt\u0000x", "messages": [{"role": "user", "content": "hi"}]})
    params = {"subAction": "run", "subActionParams": {"body": body}}
    response = api(asgi_live_server, "POST", f"/api/actions/connector/{connector.pk}/_execute", operator,
                   json={"params": params})
    envelope = response.json()
    assert envelope["status"] == "error" and "[model]" in envelope["service_message"]
    recorded_events.wait_for(1)
    assert "\x00" not in ExecutionEvent.objects.get().requested_model


# --- usage ranges near the calendar's limits ---------------------------------------------------------------------
USAGE_PATHS = ["/usage/", "/usage/connectors/{id}/", "/usage/connectors/{id}/export.csv",
               "/usage/connectors/{id}/events.csv", "/api/usage/connectors/{id}"]
EDGES = [("from=9999-12-30&to=9999-12-31", "[from]"), ("from=0001-01-01T00:00:00%2B14:00", "[from]"),
         ("from=2025-01-01&to=9999-12-31", "[to]"), ("from=0001-01-01", "[from]")]


@pytest.mark.parametrize("path", USAGE_PATHS)
@pytest.mark.parametrize("query, parameter", EDGES)
def test_ranges_at_the_calendars_limits_are_a_400_naming_the_parameter(client, analyst, make_connector, path, query,
                                                                       parameter):
    connector = make_connector()
    client.force_login(analyst)
    response = client.get(path.format(id=connector.pk) + "?" + query)
    assert response.status_code == 400
    assert parameter in response.content.decode()


# --- NUL and other control characters ----------------------------------------------------------------------------
def test_a_nul_in_a_basic_username_is_a_400(asgi_live_server, operator):
    credentials = base64.b64encode(b"olivia\x00:whatever").decode()
    response = httpx.get(f"{asgi_live_server.url}/api/actions/connectors", headers={"Authorization": f"Basic {credentials}"})
    assert response.status_code == 400 and "NUL" in response.json()["message"]


@pytest.mark.parametrize("path", ["/api/actions/connector/%00", "/api/actions/connector/%00/_execute",
                                  "/api/openai/%00/v1/models", "/api/usage/connectors/%00", "/usage/connectors/%00/",
                                  "/connectors/%00/", "/connectors/a%0Ab/edit/"])
def test_a_control_character_in_a_path_is_a_400(asgi_live_server, operator, path):
    for headers in ({"Authorization": basic_auth(operator)}, {}):  # the API's short path, and the full stack
        response = httpx.get(f"{asgi_live_server.url}{path}", headers=headers)
        assert response.status_code == 400 and "control character" in response.text


@pytest.mark.parametrize("field, value, named", [
    ("name", "evil\u0000name", "[name]"), ("name", "line\nbreak", "[name]"),
    ("config.defaultModel", "gpt\u0000", "[defaultModel]"),  # Kibana's key names
    ("config.apiUrl", "http://user:pass@api.openai.com/v1/chat/completions", "user name or password"),
    ("config.apiUrl", "https://evil.example\\@api.openai.com/v1/chat/completions", "backslash"),
    ("config.apiUrl", "https://api.openai.com\\v1/chat/completions", "backslash"),
    ("config.apiUrl", "https://api.openai.com/v1/chat/completions\u0000", "control characters"),
    ("config.apiUrl", "https://api.openai.com/v1/chat completions", "spaces"),
])
def test_unstorable_or_ambiguous_connector_fields_are_refused_at_create_time(asgi_live_server, connector_admin, field,
                                                                             value, named):
    body = json.loads(json.dumps(CREATE))
    if field.startswith("config."):
        body["config"][field.split(".", 1)[1]] = value
    else:
        body[field] = value
    response = api(asgi_live_server, "POST", "/api/actions/connector", connector_admin, json=body)
    assert response.status_code == 400, response.text
    assert named in response.json()["message"]
    assert not Connector.objects.exists()


def test_the_form_refuses_a_url_with_credentials(client, connector_admin):
    client.force_login(connector_admin)
    response = client.post("/connectors/new/", {"name": "Form", "provider": "OpenAI", "api_key": "sk-form-0123456789",
                                                "api_url": "https://user:pass@api.openai.com/v1/chat/completions"})
    assert response.status_code == 200 and "cannot contain a user name or password" in response.content.decode()
    assert not Connector.objects.exists()


# --- wrong types and sizes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    {**CREATE, "config": []}, {**CREATE, "config": {**CONFIG, "headers": ["X-A: 1"]}}, {**CREATE, "name": ["x"]},
    {**CREATE, "secrets": "sk"}, {**CREATE, "name": "x" * 300}, {**CREATE, "config": {**CONFIG, "apiUrl": 5}},
])
def test_wrong_types_and_sizes_on_create_are_a_400(client, connector_admin, body):
    response = client.post("/api/actions/connector", json.dumps(body), content_type="application/json",
                           HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400
    assert not Connector.objects.exists()


@pytest.mark.parametrize("sub_params, named", [
    ({"body": HELLO, "timeout": "1e400"}, "too large"), ({"body": HELLO, "timeout": "ten"}, "[timeout]"),
    ({"body": 5}, "[body]"),  # Kibana's "Request validation failed (Error: [body]: ...)"
])
def test_wrong_types_in_execute_params_are_an_error_envelope(asgi_live_server, recorded_events, operator, make_connector,
                                                             fake_openai, sub_params, named):
    connector = make_connector(api_url=fake_openai.url("ok"))
    raw = json.dumps({"params": {"subAction": "run", "subActionParams": sub_params}}).replace('"1e400"', "1e400")
    response = api(asgi_live_server, "POST", f"/api/actions/connector/{connector.pk}/_execute", operator, content=raw,
                   headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 400)
    text = response.text
    assert named in text and "internal error" not in text


def test_a_control_character_in_an_api_key_name_is_refused(client, operator):
    from connectors.models import ApiKey

    client.force_login(operator)
    response = client.post("/account/api-keys/", {"name": "ci\x00"}, follow=True)
    assert response.status_code == 200 and "cannot contain control characters" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_a_lone_surrogate_in_an_execute_body_is_replaced_and_answered_in_the_envelope(
        asgi_live_server, recorded_events, operator, make_connector, fake_openai):
    # Kibana accepts any JSON string here; the gateway sends U+FFFD on rather than failing with "internal error".
    connector = make_connector(api_url=fake_openai.url("ok"))
    raw = '{"params": {"subAction": "invokeAI", "subActionParams": {"messages": [{"role": "user", "content": "a\\ud800b"}]}}}'
    response = api(asgi_live_server, "POST", f"/api/actions/connector/{connector.pk}/_execute", operator, content=raw,
                   headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert fake_openai.requests[-1].json()["messages"][0]["content"] == "a\ufffdb"
    recorded_events.wait_for(1)
