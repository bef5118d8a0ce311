"""Kibana's own API integration tests for the OpenAI connector, replayed against this app.

Each test names the Kibana test it mirrors, from
``x-pack/platform/test/alerting_api_integration/security_and_spaces/group2/tests/actions/connector_types/openai.ts``
(the ones that need no Elasticsearch), with the request and the expected body as Kibana's test has them: a superuser
with Basic auth, ``kbn-xsrf: foo`` on every write, a simulator upstream (tests/servers/kibana_simulator.py) whose host is the
only allowed one. Bodies are compared with ``==`` (Kibana's tests use deep equality). The rest of the module replays
the other Kibana behaviours docs/KIBANA.md lists (messages, settings), each naming the Kibana source it follows.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import basic_auth
from tests.helpers.execute import execute_body
from tests.servers.kibana_simulator import GEN_AI_SUCCESS_RESPONSE, OpenAISimulator

pytest_plugins = ["tests.servers.asgi_server"]

NAME = "A genAi action"
SECRETS = {"apiKey": "genAiApiKey"}
HELLO_BODY = '{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"Hello world"}]}'


@pytest.fixture
def kibana(asgi_live_server, admin_user, actions_config):
    """An httpx client as Kibana's supertest: superuser Basic auth, kbn-xsrf on every request, one allowed host."""
    actions_config({"allowedHosts": ["127.0.0.1"]})
    headers = {"Authorization": basic_auth(admin_user), "kbn-xsrf": "foo"}
    with httpx.Client(base_url=asgi_live_server.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def simulator():
    sim = OpenAISimulator()
    yield sim
    sim.close()


@pytest.fixture
def error_simulator():
    sim = OpenAISimulator(return_error=True)
    yield sim
    sim.close()


def create_connector(kibana, api_url: str) -> str:
    """openai.ts ``createConnector``."""
    response = kibana.post("/api/actions/connector", json={
        "name": NAME, "connector_type_id": ".gen-ai", "config": {"apiProvider": "OpenAI", "apiUrl": api_url},
        "secrets": SECRETS,
    })
    assert response.status_code == 200, response.text
    return response.json()["id"]


def bad_request(message: str) -> dict:
    return {"statusCode": 400, "error": "Bad Request", "message": message}


# --- openai.ts: describe('action creation') ---------------------------------------------------------------------

def test_should_return_200_when_creating_the_connector_without_a_default_model(kibana, simulator):
    api_url = simulator.start()
    response = kibana.post("/api/actions/connector", json={
        "name": NAME, "connector_type_id": ".gen-ai", "config": {"apiProvider": "OpenAI", "apiUrl": api_url},
        "secrets": SECRETS,
    })
    assert response.status_code == 200
    created = response.json()
    assert created == {
        "id": created["id"], "is_preconfigured": False, "is_system_action": False, "is_deprecated": False,
        "name": NAME, "connector_type_id": ".gen-ai", "is_missing_secrets": False,
        "config": {"apiProvider": "OpenAI", "apiUrl": api_url, "defaultModel": "gpt-4.1"},
    }


def test_should_return_200_when_creating_the_connector_with_a_default_model(kibana, simulator):
    api_url = simulator.start()
    config = {"apiProvider": "OpenAI", "apiUrl": api_url, "defaultModel": "gpt-3.5-turbo"}
    response = kibana.post("/api/actions/connector", json={
        "name": NAME, "connector_type_id": ".gen-ai", "config": config, "secrets": SECRETS,
    })
    assert response.status_code == 200
    created = response.json()
    assert created == {
        "id": created["id"], "is_preconfigured": False, "is_system_action": False, "is_deprecated": False,
        "name": NAME, "connector_type_id": ".gen-ai", "is_missing_secrets": False, "config": config,
    }


def test_should_return_400_bad_request_when_creating_the_connector_without_the_api_provider(kibana, simulator):
    api_url = simulator.start()
    response = kibana.post("/api/actions/connector", json={
        "name": "A GenAi action", "connector_type_id": ".gen-ai", "config": {"apiUrl": api_url},
        "secrets": {"apiKey": "123"},
    })
    assert response.status_code == 400
    assert response.json() == bad_request(
        "error validating action type config: types that failed validation:\n"
        "- [0.apiProvider]: expected at least one defined value but got [undefined]\n"
        "- [1.apiProvider]: expected at least one defined value but got [undefined]\n"
        "- [2.apiProvider]: expected at least one defined value but got [undefined]"
    )


def test_should_return_400_bad_request_when_creating_the_connector_without_the_api_url(kibana):
    response = kibana.post("/api/actions/connector", json={
        "name": NAME, "connector_type_id": ".gen-ai", "config": {"apiProvider": "OpenAI"}, "secrets": SECRETS,
    })
    assert response.status_code == 400
    assert response.json() == bad_request(
        "error validating action type config: types that failed validation:\n"
        "- [0.apiProvider]: expected value to equal [Azure OpenAI]\n"
        "- [1.apiUrl]: expected value of type [string] but got [undefined]\n"
        "- [2.apiProvider]: expected value to equal [Other]"
    )


def test_should_return_400_bad_request_when_creating_the_connector_with_a_api_url_that_is_not_allowed(kibana):
    response = kibana.post("/api/actions/connector", json={
        "name": NAME, "connector_type_id": ".gen-ai",
        "config": {"apiProvider": "OpenAI", "apiUrl": "http://genAi.mynonexistent.com"}, "secrets": SECRETS,
    })
    assert response.status_code == 400
    assert response.json() == bad_request(
        "error validating action type config: Error configuring OpenAI action: Error: error validating url: target "
        'url "http://genAi.mynonexistent.com" is not added to the Kibana config xpack.actions.allowedHosts'
    )


def test_should_return_400_bad_request_when_creating_the_connector_without_secrets(kibana, simulator):
    api_url = simulator.start()
    response = kibana.post("/api/actions/connector", json={
        "name": NAME, "connector_type_id": ".gen-ai", "config": {"apiProvider": "OpenAI", "apiUrl": api_url},
    })
    assert response.status_code == 400
    assert response.json() == bad_request(
        "error validating action type secrets: [apiKey]: expected value of type [string] but got [undefined]"
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


VALID_CERT = b64("-----BEGIN CERTIFICATE-----\nMIIC+zCCAeOgAwIBAgIJAKKpPKItestcert\n-----END CERTIFICATE-----")
VALID_KEY = b64("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----")


@pytest.mark.parametrize(
    "kibana_test, secrets, message",
    [
        ("should return error when creating the connector with PKI auth that has missing crt",
         {"privateKeyData": b64("-----BEGIN PRIVATE KEY-----key-----END PRIVATE KEY-----")},
         "Certificate data must be provided for PKI"),
        ("should return error when creating the connector with PKI auth that has missing key",
         {"certificateData": b64("-----BEGIN CERTIFICATE-----cert-----END CERTIFICATE-----")},
         "Private key data must be provided for PKI"),
        ("should return error when creating the connector with PKI auth that has bad crt",
         {"certificateData": b64("invalid crt format"),
          "privateKeyData": b64("-----BEGIN PRIVATE KEY-----key-----END PRIVATE KEY-----")},
         'Invalid Certificate data file format: The file must be a PEM-encoded certificate beginning with '
         '"-----BEGIN CERTIFICATE-----".'),
        ("should return error when creating the connector with PKI auth that has bad key",
         {"certificateData": b64("-----BEGIN CERTIFICATE-----cert-----END CERTIFICATE-----"),
          "privateKeyData": b64("invalid key format")},
         'Invalid Private key data file format: The file must be a PEM-encoded private key beginning with '
         '"-----BEGIN PRIVATE KEY-----" or "-----BEGIN RSA PRIVATE KEY-----".'),
    ],
    ids=["missing-crt", "missing-key", "bad-crt", "bad-key"],
)
def test_pki_secrets_are_checked_as_kibanas_pki_tests(kibana, simulator, kibana_test, secrets, message):
    api_url = simulator.start()
    response = kibana.post("/api/actions/connector", json={
        "name": NAME, "connector_type_id": ".gen-ai", "config": {"apiProvider": "OpenAI", "apiUrl": api_url},
        "secrets": secrets,
    })
    assert response.status_code == 400, kibana_test
    assert response.json() == bad_request(f"error validating action type secrets: {message}")


def test_should_create_the_connector_with_pki_auth_when_both_certificate_and_key_are_valid(kibana, simulator):
    api_url = simulator.start()
    response = kibana.post("/api/actions/connector", json={
        "name": f"{NAME} PKI", "connector_type_id": ".gen-ai",
        "config": {"apiProvider": "Other", "apiUrl": api_url, "defaultModel": "gpt-3.5-turbo"},
        "secrets": {"certificateData": VALID_CERT, "privateKeyData": VALID_KEY},
    })
    assert response.status_code == 200, response.text
    assert "id" in response.json()
    assert response.json()["config"]["apiProvider"] == "Other"
    assert VALID_CERT not in response.text and VALID_KEY not in response.text


def test_should_execute_successfully_with_valid_pki_certificate_and_key(kibana, simulator, recorded_events):
    # Without a verificationMode Kibana does not use the PKI material (openai.ts), so the plain-http simulator
    # answers; the same holds here (docs/KIBANA.md 1.2).
    api_url = simulator.start()
    created = kibana.post("/api/actions/connector", json={
        "name": f"{NAME} PKI exec", "connector_type_id": ".gen-ai",
        "config": {"apiProvider": "Other", "apiUrl": api_url, "defaultModel": "gpt-3.5-turbo"},
        "secrets": {"certificateData": VALID_CERT, "privateKeyData": VALID_KEY},
    }).json()
    response = kibana.post(f"/api/actions/connector/{created['id']}/_execute", json={
        "params": {"subAction": "test", "subActionParams": {"body": HELLO_BODY}},
    })
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["connector_id"] == created["id"]
    recorded_events.wait_for(1)


# --- openai.ts: describe('executor') ----------------------------------------------------------------------------

def test_should_fail_when_the_params_is_empty(kibana, simulator, recorded_events):
    connector_id = create_connector(kibana, simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={"params": {}})
    assert response.status_code == 200
    assert response.json() == {
        "status": "error", "connector_id": connector_id,
        "message": "error validating action params: [subAction]: expected value of type [string] but got [undefined]",
        "retry": False, "errorSource": "user",
    }
    recorded_events.wait_for(1)


def test_should_fail_when_the_sub_action_is_invalid(kibana, simulator, recorded_events):
    connector_id = create_connector(kibana, simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute",
                           json={"params": {"subAction": "invalidAction"}})
    assert response.status_code == 200
    assert response.json() == {
        "connector_id": connector_id, "status": "error", "retry": True,
        "message": "an error occurred while running the action", "errorSource": "framework",
        "service_message": f'Sub action "invalidAction" is not registered. Connector id: {connector_id}. '
                           "Connector name: OpenAI. Connector type: .gen-ai",
    }
    recorded_events.wait_for(1)


def test_should_send_a_stringified_json_object(kibana, simulator, recorded_events):
    from usage.models import ExecutionEvent

    connector_id = create_connector(kibana, simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={
        "params": {"subAction": "test", "subActionParams": {"body": HELLO_BODY}},
    })
    assert response.status_code == 200
    # Kibana's simulator received the body without a "stream" key (Kibana sets it for api.openai.com URLs only).
    assert simulator.request_data == {
        "model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hello world"}],
    }
    assert response.json() == {"status": "ok", "connector_id": connector_id, "data": GEN_AI_SUCCESS_RESPONSE}
    # Kibana: one execute-start and one execute event (the export writes both), request_body_bytes 78.
    recorded_events.wait_for(1)
    (event,) = ExecutionEvent.objects.filter(connector_id=connector_id)
    assert event.outcome == "success" and event.sub_action == "test"
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (10, 10, 20)
    assert simulator.request_bytes == HELLO_BODY.encode()
    assert event.request_bytes == len(simulator.request_bytes) == 78


def test_should_return_a_failure_when_error_happens(kibana, error_simulator, recorded_events):
    connector_id = create_connector(kibana, error_simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={"params": {}})
    assert response.status_code == 200
    assert response.json() == {
        "status": "error", "connector_id": connector_id,
        "message": "error validating action params: [subAction]: expected value of type [string] but got [undefined]",
        "retry": False, "errorSource": "user",
    }
    recorded_events.wait_for(1)


def test_should_return_a_error_when_error_happens(kibana, error_simulator, recorded_events):
    connector_id = create_connector(kibana, error_simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={
        "params": {"subAction": "test", "subActionParams": {"body": HELLO_BODY}},
    })
    assert response.status_code == 200
    assert response.json() == {
        "status": "error", "connector_id": connector_id, "message": "an error occurred while running the action",
        "retry": True, "errorSource": "framework",
        "service_message": "Status code: 422. Message: API Error: Unprocessable Entity - "
                           "The model `bad model` does not exist",
    }
    recorded_events.wait_for(1)


# --- the rest of Kibana's connector API contract (docs/KIBANA.md 1-3, 5, 6) -------------------------------------

def test_every_config_key_of_kibanas_schema_round_trips_and_a_fetched_connector_posts_back_unchanged(kibana,
                                                                                                    simulator):
    # Kibana's ConfigSchema for Other (kbn-connector-schemas/openai), every key of it.
    api_url = simulator.start()
    config = {"apiProvider": "Other", "apiUrl": api_url, "defaultModel": "llama3", "headers": {"X-Team": "a"},
              "contextWindowLength": 128000, "temperature": 0.2, "enableNativeFunctionCalling": True,
              "verificationMode": "none"}
    created = kibana.post("/api/actions/connector", json={
        "name": "Other", "connector_type_id": ".gen-ai", "config": config, "secrets": {"apiKey": "k"}}).json()
    assert created["config"] == config
    fetched = kibana.get(f"/api/actions/connector/{created['id']}").json()
    assert fetched["config"] == config and fetched["is_connector_type_deprecated"] is False
    # POSTed back (as a new connector) and PUT back unchanged.
    again = kibana.post("/api/actions/connector", json={
        "name": fetched["name"], "connector_type_id": fetched["connector_type_id"], "config": fetched["config"],
        "secrets": {"apiKey": "k"}})
    assert again.status_code == 200 and again.json()["config"] == config
    updated = kibana.put(f"/api/actions/connector/{created['id']}",
                         json={"name": fetched["name"], "config": fetched["config"]})
    assert updated.status_code == 200
    # Kibana's update.ts sets isConnectorTypeDeprecated; create.ts's response (test above) has no such key.
    assert updated.json() == fetched


def test_numeric_config_keys_are_coerced_from_strings_as_kibanas_schema_does(kibana, simulator):
    config = {"apiProvider": "OpenAI", "apiUrl": simulator.start(), "contextWindowLength": "8000", "temperature": "1"}
    created = kibana.post("/api/actions/connector", json={
        "name": "n", "connector_type_id": ".gen-ai", "config": config, "secrets": SECRETS}).json()
    assert created["config"]["contextWindowLength"] == 8000 and created["config"]["temperature"] == 1.0


def test_other_only_keys_are_refused_for_openai_as_kibanas_strict_schema_does(kibana, simulator):
    response = kibana.post("/api/actions/connector", json={
        "name": "n", "connector_type_id": ".gen-ai", "secrets": SECRETS,
        "config": {"apiProvider": "OpenAI", "apiUrl": simulator.start(), "verificationMode": "none"}})
    assert response.json() == bad_request(
        "error validating action type config: [verificationMode]: definition for this key is missing")


def test_an_azure_url_still_holding_a_template_placeholder_is_refused_naming_the_part(kibana, actions_config):
    actions_config({"allowedHosts": ["*"]})
    url = "https://{resource}.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
    response = kibana.post("/api/actions/connector", json={
        "name": "n", "connector_type_id": ".gen-ai", "secrets": SECRETS,
        "config": {"apiProvider": "Azure OpenAI", "apiUrl": url}})
    assert response.status_code == 400
    assert "Replace {resource} in the URL with your Azure OpenAI resource name" in response.json()["message"]


def test_azure_api_management_urls_and_a_default_model_are_accepted(kibana, actions_config):
    actions_config({"allowedHosts": ["*"]})
    for url in ("https://apim.example.net/team/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
                "https://res.openai.azure.com/openai/v1/chat/completions",
                "https://apim.example.net/ai/gpt4o/chat/completions"):
        response = kibana.post("/api/actions/connector", json={
            "name": "n", "connector_type_id": ".gen-ai", "secrets": SECRETS,
            "config": {"apiProvider": "Azure OpenAI", "apiUrl": url, "defaultModel": "gpt-4o"}})
        assert response.status_code == 200, (url, response.text)


def test_connector_types_honours_feature_id_as_kibanas_list_types(kibana):
    # actionTypeRegistry.list({featureId}) keeps the types whose supportedFeatureIds include it.
    everything = kibana.get("/api/actions/connector_types").json()
    assert [t["id"] for t in everything] == [".gen-ai"]
    assert everything[0]["supported_feature_ids"] == [
        "generativeAIForSecurity", "generativeAIForObservability", "generativeAIForSearchPlayground"]
    assert everything[0]["source"] == "stack" and everything[0]["is_deprecated"] is False
    assert kibana.get("/api/actions/connector_types", params={"feature_id": "generativeAIForSecurity"}).json() == everything
    assert kibana.get("/api/actions/connector_types", params={"feature_id": "alerting"}).json() == []


def test_enabled_action_types_without_gen_ai_forbids_create_update_and_execute_with_kibanas_message(
        kibana, simulator, actions_config, recorded_events):
    api_url = simulator.start()
    connector_id = create_connector(kibana, api_url)
    actions_config({"allowedHosts": ["127.0.0.1"], "enabledActionTypes": [".slack"]})
    forbidden = {"statusCode": 403, "error": "Forbidden",
                 "message": 'action type ".gen-ai" is not enabled in the Kibana config xpack.actions.enabledActionTypes'}
    body = {"name": NAME, "connector_type_id": ".gen-ai", "secrets": SECRETS,
            "config": {"apiProvider": "OpenAI", "apiUrl": api_url}}
    created = kibana.post("/api/actions/connector", json=body)
    assert (created.status_code, created.json()) == (403, forbidden)
    updated = kibana.put(f"/api/actions/connector/{connector_id}", json={"name": "x", "config": body["config"]})
    assert (updated.status_code, updated.json()) == (403, forbidden)
    executed = kibana.post(f"/api/actions/connector/{connector_id}/_execute",
                           json={"params": {"subAction": "test", "subActionParams": {"body": HELLO_BODY}}})
    assert (executed.status_code, executed.json()) == (403, forbidden)
    assert simulator.request_data is None
    recorded_events.wait_for(1)  # the refused execution is recorded once
    types = kibana.get("/api/actions/connector_types").json()
    assert types[0]["enabled"] is False and types[0]["enabled_in_config"] is False


PRECONFIGURED = {
    "shared-openai": {"name": "Shared OpenAI", "actionTypeId": ".gen-ai",
                      "config": {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions"},
                      "secrets": {"apiKey": "sk-preconfigured"}},
    "team-slack": {"name": "Team Slack", "actionTypeId": ".slack", "secrets": {"webhookUrl": "https://hooks.example"}},
}


def test_preconfigured_connectors_are_listed_as_kibana_lists_them(kibana, actions_config):
    actions_config({"preconfigured": PRECONFIGURED})
    listing = {c["id"]: c for c in kibana.get("/api/actions/connectors").json()}
    # connectorFromInMemoryConnector: no config, no is_missing_secrets (exposeConfig not set).
    assert listing["shared-openai"] == {
        "id": "shared-openai", "name": "Shared OpenAI", "connector_type_id": ".gen-ai", "is_preconfigured": True,
        "is_deprecated": False, "is_system_action": False, "is_connector_type_deprecated": False,
        "referenced_by_count": 0}
    assert listing["team-slack"]["connector_type_id"] == ".slack" and "config" not in listing["team-slack"]
    assert kibana.get("/api/actions/connector/team-slack").json()["name"] == "Team Slack"
    assert "sk-preconfigured" not in kibana.get("/api/actions/connectors").text


def test_a_preconfigured_connector_with_expose_config_returns_its_config(kibana, actions_config):
    actions_config({"preconfigured": {"shared-openai": {**PRECONFIGURED["shared-openai"], "exposeConfig": True}}})
    fetched = kibana.get("/api/actions/connector/shared-openai").json()
    assert fetched["config"] == {**PRECONFIGURED["shared-openai"]["config"]}


def test_preconfigured_update_and_delete_use_kibanas_messages(kibana, actions_config):
    actions_config({"preconfigured": PRECONFIGURED})
    updated = kibana.put("/api/actions/connector/shared-openai", json={"name": "x", "config": {}})
    assert updated.json() == bad_request("Preconfigured action shared-openai can not be updated.")
    deleted = kibana.delete("/api/actions/connector/team-slack")
    assert deleted.json() == bad_request("Preconfigured action team-slack is not allowed to delete.")
    created = kibana.post("/api/actions/connector/team-slack", json={
        "name": "x", "connector_type_id": ".gen-ai", "config": {}, "secrets": {}})
    assert created.json() == bad_request("This team-slack already exists in a preconfigured action.")


def test_a_preconfigured_connector_of_another_type_is_refused_on_execute(kibana, actions_config, recorded_events):
    actions_config({"preconfigured": PRECONFIGURED})
    response = kibana.post("/api/actions/connector/team-slack/_execute", json={"params": {"message": "hi"}})
    assert response.status_code == 400
    assert response.json() == bad_request('Action type ".slack" is not registered.')
    recorded_events.wait_for(1)
    actions_config({"preconfigured": PRECONFIGURED, "enabledActionTypes": [".gen-ai"]})
    response = kibana.post("/api/actions/connector/team-slack/_execute", json={"params": {"message": "hi"}})
    assert response.status_code == 403
    assert response.json()["message"] == (
        'action type ".slack" is not enabled in the Kibana config xpack.actions.enabledActionTypes')


def test_execute_params_that_are_not_an_object_are_400_with_kibanas_wording(kibana, simulator, recorded_events):
    connector_id = create_connector(kibana, simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={})
    assert response.json() == bad_request(
        "[request body.params]: expected value of type [object] but got [undefined]")
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json={"params": "x"})
    assert response.json() == bad_request("[request body.params]: expected value of type [object] but got [string]")
    recorded_events.wait_for(2)


# --- the _execute envelope beyond openai.ts (action_executor.ts, sub_action_framework, openai.ts; docs/KIBANA.md 4)

def test_sub_action_params_validation_is_a_user_error_thrown_while_running(kibana, simulator, recorded_events):
    # sub_action_framework/executor.ts: "Request validation failed (<error>)", tagged TaskErrorSource.USER.
    connector_id = create_connector(kibana, simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json=execute_body("test"))
    assert response.json() == {
        "status": "error", "connector_id": connector_id, "message": "an error occurred while running the action",
        "retry": True, "errorSource": "user",
        "service_message": "Request validation failed (Error: [body]: expected value of type [string] but got "
                           "[undefined])",
    }
    assert simulator.request_data is None
    recorded_events.wait_for(1)


def test_a_provider_401_reads_as_kibanas_unauthorized_api_error(kibana, recorded_events, fake_openai, actions_config):
    actions_config({"allowedHosts": ["127.0.0.1"]})
    connector_id = create_connector(kibana, fake_openai.url("status-401"))
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json=execute_body("run", body=HELLO_BODY))
    assert response.json() == {
        "status": "error", "connector_id": connector_id, "message": "an error occurred while running the action",
        "retry": True, "errorSource": "framework",
        "service_message": "Status code: 401. Message: Unauthorized API Error - Simulated 401 from the fake server",
    }
    recorded_events.wait_for(1)


def test_a_failure_without_http_status_reads_as_kibanas_unexpected_api_error(kibana, recorded_events):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector_id = create_connector(kibana, f"http://127.0.0.1:{port}/v1/chat/completions")
    envelope = kibana.post(f"/api/actions/connector/{connector_id}/_execute",
                           json=execute_body("run", body=HELLO_BODY)).json()
    assert (envelope["message"], envelope["retry"], envelope["errorSource"]) == (
        "an error occurred while running the action", True, "framework")
    assert envelope["service_message"].startswith(
        f"Status code: undefined. Message: Unexpected API Error: ECONNREFUSED - Could not connect to 127.0.0.1:{port}")
    recorded_events.wait_for(1)


def test_invoke_ai_answers_message_and_usage_as_kibana(kibana, simulator, recorded_events):
    connector_id = create_connector(kibana, simulator.start())
    response = kibana.post(f"/api/actions/connector/{connector_id}/_execute", json=execute_body(
        "invokeAI", messages=[{"role": "user", "content": "Hello world"}], n=1, temperature=0, timeout=60000))
    assert response.json() == {"status": "ok", "connector_id": connector_id, "data": {
        "message": "Hello there! How may I assist you today?", "usage": GEN_AI_SUCCESS_RESPONSE["usage"]}}
    assert simulator.request_data["n"] == 1 and simulator.request_data["temperature"] == 0
    assert "timeout" not in simulator.request_data
    recorded_events.wait_for(1)


def test_a_stream_over_execute_relays_the_providers_server_sent_events(kibana, fake_openai, recorded_events,
                                                                        actions_config):
    # Inside Kibana a stream goes to a server-side caller; over HTTP this app relays the provider's SSE as they
    # come (docs/KIBANA.md 4.10 says how that differs from Kibana's HTTP route).
    actions_config({"allowedHosts": ["127.0.0.1"]})
    connector_id = create_connector(kibana, fake_openai.url("stream"))
    with kibana.stream("POST", f"/api/actions/connector/{connector_id}/_execute",
                       json=execute_body("stream", body=HELLO_BODY, stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = b"".join(response.iter_bytes()).decode()
    assert text.startswith("data: ") and text.rstrip().endswith("data: [DONE]")
    recorded_events.wait_for(1)
