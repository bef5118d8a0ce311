"""The rest of the Kibana drop-in (docs/KIBANA.md): JSON for every /api/ answer, getDashboard, the texts scripts
match on, the bodies a strict proxy sees, validation as lax or strict as Kibana's, the 8.x routes and the connector
type's deprecation flag. Over a real socket (uvicorn), as a Kibana script calls the app; each test names the Kibana
source it follows.
"""

from __future__ import annotations

import re

import httpx
import pytest

from connectors.models import Connector, Provider
from connectors.outbound.providers import shape_body
from tests.conftest import basic_auth
from tests.servers.kibana_simulator import OpenAISimulator

pytest_plugins = ["tests.servers.asgi_server"]

SECRETS = {"apiKey": "genAiApiKey"}
NOT_FOUND = {"statusCode": 404, "error": "Not Found", "message": "Not Found"}


def client_for(server, user=None, **headers) -> httpx.Client:
    if user is not None:
        headers["Authorization"] = basic_auth(user)
    return httpx.Client(base_url=server.url, headers={"kbn-xsrf": "foo", **headers}, timeout=30)


@pytest.fixture
def kibana(asgi_live_server, admin_user, actions_config):
    actions_config({"allowedHosts": ["*"]})
    with client_for(asgi_live_server, admin_user) as client:
        yield client


@pytest.fixture
def simulator():
    sim = OpenAISimulator()
    yield sim
    sim.close()


def create(kibana, config: dict, name: str = "c", secrets: dict | None = None) -> httpx.Response:
    return kibana.post("/api/actions/connector", json={
        "name": name, "connector_type_id": ".gen-ai", "config": config, "secrets": secrets or SECRETS})


# --- every /api/ answer is JSON (hapi's Boom body) -------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("GET", "/api/nothing-here"), ("POST", "/api/actions/connector/x/_run"), ("DELETE", "/api/actions/connectors/"),
    ("GET", "/api/"), ("PUT", "/api/status"),
])
def test_unknown_api_paths_answer_kibanas_json_404_with_or_without_credentials(asgi_live_server, admin_user,
                                                                                method, path):
    for user in (admin_user, None):  # the short path (credentials) and Django's full stack (none)
        with client_for(asgi_live_server, user) as client:
            response = client.request(method, path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json() == NOT_FOUND


def test_a_method_a_route_does_not_take_answers_json_405(kibana):
    response = kibana.patch("/api/actions/connectors")
    assert response.status_code == 405 and response.headers["content-type"] == "application/json"
    assert response.json()["statusCode"] == 405


def test_delete_answers_204_without_a_content_type(kibana, simulator):
    connector_id = create(kibana, {"apiProvider": "OpenAI", "apiUrl": simulator.start()}).json()["id"]
    response = kibana.delete(f"/api/actions/connector/{connector_id}")
    assert response.status_code == 204 and response.content == b""
    assert "content-type" not in response.headers


def test_a_request_without_credentials_gets_hapis_unauthorized(asgi_live_server):
    with client_for(asgi_live_server) as client:
        response = client.get("/api/actions/connectors")
    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "error": "Unauthorized", "message": "Unauthorized"}


# --- getDashboard (openai.ts SUB_ACTION.DASHBOARD) --------------------------------------------------------------

def dashboard(client, connector_id: str, sub_params=None) -> dict:
    params = {"subAction": "getDashboard", "subActionParams": sub_params or {"dashboardId": "generative-ai-token-usage"}}
    response = client.post(f"/api/actions/connector/{connector_id}/_execute", json={"params": params})
    assert response.status_code == 200
    return response.json()


def test_get_dashboard_says_available_and_where_for_a_caller_who_may_read_usage(asgi_live_server, admin_user,
                                                                                operator, actions_config, simulator,
                                                                                kibana):
    connector_id = create(kibana, {"apiProvider": "OpenAI", "apiUrl": simulator.start()}).json()["id"]
    assert dashboard(kibana, connector_id) == {"status": "ok", "connector_id": connector_id, "data": {
        "available": True, "url": f"{asgi_live_server.url}/usage/connectors/{connector_id}/"}}
    # An operator may run the connector but not read usage: Kibana's answer without event-log read access.
    with client_for(asgi_live_server, operator) as client:
        assert dashboard(client, connector_id) == {"status": "ok", "connector_id": connector_id,
                                                   "data": {"available": False}}
    assert simulator.request_data is None  # nothing was sent to the provider
    from usage.models import ExecutionEvent
    assert not ExecutionEvent.objects.exists()


def test_get_dashboard_params_are_validated_as_its_schema(kibana, simulator):
    connector_id = create(kibana, {"apiProvider": "OpenAI", "apiUrl": simulator.start()}).json()["id"]
    assert dashboard(kibana, connector_id, {"other": 1}) == {
        "status": "error", "connector_id": connector_id, "message": "an error occurred while running the action",
        "retry": True, "errorSource": "user",
        "service_message": "Request validation failed (Error: [other]: definition for this key is missing)"}
    envelope = dashboard(kibana, connector_id, {"dashboardId": 5})
    assert envelope["service_message"] == ("Request validation failed (Error: [dashboardId]: expected value of type "
                                           "[string] but got [number])")


# --- texts scripts match on -------------------------------------------------------------------------------------

def test_a_providers_own_reason_phrase_is_kept_as_axios_statustext(kibana, fake_openai, recorded_events):
    connector_id = create(kibana, {"apiProvider": "OpenAI",
                                   "apiUrl": fake_openai.url("status-429-Slow_Down_Please")}).json()["id"]
    envelope = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={"params": {
        "subAction": "run", "subActionParams": {"body": '{"messages":[]}'}}}).json()
    assert envelope["service_message"] == ("Status code: 429. Message: API Error: Slow Down Please - "
                                           "Simulated 429 from the fake server")
    recorded_events.wait_for(1)


def test_the_list_is_sorted_as_javascripts_locale_compare(kibana, simulator):
    url = simulator.start()
    for name in ("zeta", "Banana", "apple", "Éclair", "banana2", "_internal"):
        assert create(kibana, {"apiProvider": "OpenAI", "apiUrl": url}, name=name).status_code == 200
    names = [c["name"] for c in kibana.get("/api/actions/connectors").json()]
    # Code point order would be _internal, Banana, apple, banana2, zeta, Éclair.
    assert names == ["_internal", "apple", "Banana", "banana2", "Éclair", "zeta"]


@pytest.mark.django_db
def test_the_usage_link_names_the_connectors_provider_as_kibana(client, admin_user, make_connector):
    connector = make_connector(name="Team Azure", provider=Provider.AZURE,
                               api_url="https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions"
                                       "?api-version=2024-10-21")
    client.force_login(admin_user)
    page = client.get(f"/connectors/{connector.pk}/").content.decode()
    assert 'View Azure OpenAI Usage Dashboard for "Team Azure" Connector' in page


# --- bodies a strict proxy sees (openai_utils.ts, azure_openai_utils.ts, other_openai_utils.ts) ------------------

def unsaved(provider: str, url: str, default_model: str = "") -> Connector:
    return Connector(name="c", provider=provider, api_url=url, default_model=default_model)


def test_bodies_are_shaped_per_provider_as_kibanas_utils():
    hello = {"messages": [{"role": "user", "content": "Hi"}]}
    openai = unsaved(Provider.OPENAI, "https://api.openai.com/v1/chat/completions")
    assert shape_body(openai, hello, stream=False) == {**hello, "stream": False, "model": "gpt-4.1"}
    assert shape_body(openai, hello, stream=True)["stream_options"] == {"include_usage": True}
    gateway = unsaved(Provider.OPENAI, "https://gateway.example/v1/chat/completions")
    assert shape_body(gateway, hello, stream=False) == {**hello, "model": "gpt-4.1"}
    assert "stream_options" not in shape_body(gateway, hello, stream=True)
    azure = unsaved(Provider.AZURE, "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=1")
    assert shape_body(azure, hello, stream=True) == {**hello, "stream": True, "stream_options": {"include_usage": True}}
    azure_gateway = unsaved(Provider.AZURE, "https://apim.example/ai/chat")
    assert shape_body(azure_gateway, hello, stream=False) == hello
    other = unsaved(Provider.OTHER, "http://127.0.0.1:11434/v1/chat/completions", "llama3")
    assert shape_body(other, hello, stream=True) == {**hello, "model": "llama3", "stream": True}


def test_no_retry_after_key_in_the_envelope_the_wait_is_a_header(kibana, fake_openai, recorded_events):
    connector_id = create(kibana, {"apiProvider": "OpenAI", "apiUrl": fake_openai.url("status-429")}).json()["id"]
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={"params": {
        "subAction": "run", "subActionParams": {"body": '{"messages":[]}'}}})
    assert set(response.json()) == {"status", "connector_id", "message", "service_message", "retry", "errorSource"}
    assert response.headers["retry-after"] == "7"
    recorded_events.wait_for(1)


# --- validation as Kibana's (kbn-connector-schemas/openai, index.ts configValidator) ------------------------------

def test_an_azure_gateway_url_any_temperature_and_pki_on_openai_are_accepted_as_kibana_does(kibana):
    gateway = create(kibana, {"apiProvider": "Azure OpenAI", "apiUrl": "https://apim.example.net/llm/gpt4o"})
    assert gateway.status_code == 200, gateway.text
    hot = create(kibana, {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions",
                          "temperature": 7.5})
    assert hot.status_code == 200 and hot.json()["config"]["temperature"] == 7.5
    pki = create(kibana, {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions"},
                 secrets={"apiKey": "k", "certificateData": "Y2VydA==", "privateKeyData": "a2V5"})
    # Kibana checks PKI data only when certificateData is set and a PEM header is present...
    assert pki.status_code == 400 and "Invalid Certificate data file format" in pki.json()["message"]
    pem = {"certificateData": _b64("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
           "privateKeyData": _b64("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")}
    accepted = create(kibana, {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions"},
                      secrets={"apiKey": "k", **pem})
    assert accepted.status_code == 200, accepted.text
    # ...and ignores it on OpenAI: nothing of it is kept.
    stored = Connector.objects.get(pk=accepted.json()["id"])
    assert not stored.encrypted_certificate_data and not stored.encrypted_private_key_data


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def test_framing_headers_stay_refused_a_deliberate_difference(kibana):
    response = create(kibana, {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions",
                               "headers": {"Host": "evil.example"}})
    assert response.status_code == 400 and "[headers]" in response.json()["message"]


def test_an_unknown_config_key_such_as_timeout_is_refused_as_kibanas_strict_schema(kibana, make_connector):
    response = create(kibana, {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions",
                               "timeout": 90000})
    assert response.json() == {"statusCode": 400, "error": "Bad Request", "message":
                               "error validating action type config: [timeout]: definition for this key is missing"}
    # A timeout set in the connector form is not shown either, so a fetched body posts back to Kibana unchanged.
    connector = make_connector(timeout_ms=90000)
    fetched = kibana.get(f"/api/actions/connector/{connector.pk}").json()
    assert "timeout" not in fetched["config"]
    again = create(kibana, fetched["config"], name=fetched["name"])
    assert again.status_code == 200


# --- is_connector_type_deprecated (actionTypeRegistry.isDeprecated) ----------------------------------------------

def test_is_connector_type_deprecated_says_what_the_type_registry_says(kibana, simulator):
    (gen_ai,) = kibana.get("/api/actions/connector_types").json()
    connector_id = create(kibana, {"apiProvider": "OpenAI", "apiUrl": simulator.start()}).json()["id"]
    fetched = kibana.get(f"/api/actions/connector/{connector_id}").json()
    listed = kibana.get("/api/actions/connectors").json()[0]
    assert fetched["is_connector_type_deprecated"] is listed["is_connector_type_deprecated"] is gen_ai[
        "is_deprecated"] is False


# --- Kibana 8.x's routes (routes/legacy/*.ts) --------------------------------------------------------------------

WARNING = re.compile(r'^299 Kibana-\d+\.\d+\.\d+ "This%20endpoint%20is%20deprecated"$')


def test_legacy_routes_carry_kibanas_deprecation_warning_and_camel_case(kibana, simulator):
    url = simulator.start()
    created = kibana.post("/api/actions/action", json={
        "name": "legacy", "actionTypeId": ".gen-ai", "config": {"apiProvider": "OpenAI", "apiUrl": url},
        "secrets": SECRETS})
    assert created.status_code == 200 and WARNING.match(created.headers["warning"])
    body = created.json()
    assert body == {"id": body["id"], "name": "legacy", "actionTypeId": ".gen-ai", "isPreconfigured": False,
                    "isDeprecated": False, "isSystemAction": False, "isMissingSecrets": False,
                    "config": {"apiProvider": "OpenAI", "apiUrl": url, "defaultModel": "gpt-4.1"}}
    listed = kibana.get("/api/actions")
    assert WARNING.match(listed.headers["warning"]) and listed.json()[0]["referencedByCount"] == 0
    types = kibana.get("/api/actions/list_action_types").json()
    assert types[0]["id"] == ".gen-ai" and types[0]["minimumLicenseRequired"] == "enterprise"
    assert types[0]["enabledInConfig"] is True and "enabled_in_config" not in types[0]
    missing = kibana.post("/api/actions/action", json={"name": "x", "config": {}, "secrets": {}})
    assert missing.json()["message"] == "[request body.actionTypeId]: expected value of type [string] but got [undefined]"
    assert WARNING.match(missing.headers["warning"])
    gone = kibana.get("/api/actions/action/nope")
    assert gone.status_code == 404 and gone.json()["message"] == "Saved object [action/nope] not found"
    # The 9.x routes carry no warning.
    assert "warning" not in kibana.get("/api/actions/connectors").headers
