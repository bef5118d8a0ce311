"""Kibana's connector HTTP API: shapes, validation, preconfigured connectors, and that secrets never come back."""

import json

import pytest

from connectors.accounts.api_keys import create_api_key
from connectors.models import Connector
from tests.conftest import basic_auth

pytestmark = pytest.mark.django_db

SECRET = "sk-api-SECRET-abcdef0123456789"
CONFIG = {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions", "defaultModel": "gpt-4o"}
EXPECTED_KEYS = {"id", "name", "connector_type_id", "config", "is_preconfigured", "is_deprecated", "is_missing_secrets", "is_system_action"}


def create_body(**overrides):
    body = {"name": "My OpenAI", "connector_type_id": ".gen-ai", "config": dict(CONFIG), "secrets": {"apiKey": SECRET}}
    body.update(overrides)
    return body


def call(client, method, path, user=None, body=None, **headers):
    if user is not None:
        headers["HTTP_AUTHORIZATION"] = basic_auth(user)
        headers.setdefault("HTTP_KBN_XSRF", "true")  # Kibana's rule for Basic writes (README "Authentication")
    kwargs = {"content_type": "application/json"}
    if body is not None:
        kwargs["data"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return getattr(client, method.lower())(path, **kwargs, **headers)


def test_create_returns_kibanas_shape_without_the_secret(client, connector_admin):
    response = call(client, "POST", "/api/actions/connector", connector_admin, create_body(), HTTP_KBN_XSRF="true")
    assert response.status_code == 200
    data = response.json()
    assert set(data) == EXPECTED_KEYS
    assert data["connector_type_id"] == ".gen-ai"
    assert data["config"] == CONFIG
    assert data["is_preconfigured"] is False and data["is_missing_secrets"] is False
    assert SECRET not in response.content.decode()
    assert Connector.objects.get(pk=data["id"]).api_key == SECRET


def test_create_with_a_caller_chosen_id(client, connector_admin):
    response = call(client, "POST", "/api/actions/connector/my-openai", connector_admin, create_body())
    assert response.status_code == 200
    assert response.json()["id"] == "my-openai"
    again = call(client, "POST", "/api/actions/connector/my-openai", connector_admin, create_body())
    assert again.status_code == 409
    assert again.json() == {"statusCode": 409, "error": "Conflict", "message": "Saved object [action/my-openai] conflict"}


def test_an_invalid_caller_chosen_id_is_400(client, connector_admin):
    response = call(client, "POST", "/api/actions/connector/bad%20id!", connector_admin, create_body())
    assert response.status_code == 400
    assert "[id]" in response.json()["message"]


def test_get_list_and_types(client, operator, make_connector):
    connector = make_connector(name="Listed", api_key=SECRET)
    one = call(client, "GET", f"/api/actions/connector/{connector.pk}", operator)
    assert one.status_code == 200 and one.json()["name"] == "Listed"
    listing = call(client, "GET", "/api/actions/connectors", operator)
    assert listing.status_code == 200
    assert [c["id"] for c in listing.json()] == [connector.pk]
    assert listing.json()[0]["referenced_by_count"] == 0
    assert SECRET not in one.content.decode() + listing.content.decode()
    types = call(client, "GET", "/api/actions/connector_types", operator).json()
    assert types[0]["id"] == ".gen-ai" and types[0]["enabled"] is True
    assert {"id", "name", "enabled", "enabled_in_config", "enabled_in_license", "minimum_license_required",
            "supported_feature_ids", "is_system_action_type", "source", "is_deprecated"} == set(types[0])


def test_update_without_secrets_keeps_the_stored_key(client, connector_admin, make_connector):
    connector = make_connector(api_key=SECRET)
    body = {"name": "Renamed", "config": {**CONFIG, "headers": {"X-Team": "search"}}}
    response = call(client, "PUT", f"/api/actions/connector/{connector.pk}", connector_admin, body)
    assert response.status_code == 200, response.content
    connector.refresh_from_db()
    assert connector.name == "Renamed" and connector.headers == {"X-Team": "search"}
    assert connector.api_key == SECRET


def test_update_with_secrets_replaces_the_key(client, connector_admin, make_connector):
    connector = make_connector(api_key=SECRET)
    body = {"name": "Renamed", "config": CONFIG, "secrets": {"apiKey": "sk-rotated"}}
    call(client, "PUT", f"/api/actions/connector/{connector.pk}", connector_admin, body)
    connector.refresh_from_db()
    assert connector.api_key == "sk-rotated"


def test_update_cannot_change_the_type(client, connector_admin, make_connector):
    connector = make_connector()
    body = {"name": "x", "connector_type_id": ".slack", "config": CONFIG}
    response = call(client, "PUT", f"/api/actions/connector/{connector.pk}", connector_admin, body)
    assert response.status_code == 400 and "connector_type_id" in response.json()["message"]


def test_delete_is_204_then_404(client, connector_admin, make_connector):
    connector = make_connector()
    assert call(client, "DELETE", f"/api/actions/connector/{connector.pk}", connector_admin).status_code == 204
    missing = call(client, "GET", f"/api/actions/connector/{connector.pk}", connector_admin)
    assert missing.status_code == 404
    assert missing.json() == {"statusCode": 404, "error": "Not Found", "message": f"Saved object [action/{connector.pk}] not found"}


@pytest.mark.parametrize(
    "body, field",
    [
        # the messages are Kibana's (docs/KIBANA.md 1.1, 1.2, 3); connector-type problems name the key
        # inside config/secrets after "error validating action type config:/secrets:", as Kibana does.
        (create_body(name=""), "request body.name"),
        (create_body(name=5), "request body.name"),
        (create_body(connector_type_id=".slack"), 'Action type ".slack" is not registered'),
        (create_body(config={**CONFIG, "apiUrl": "ftp://x"}), "config: Error configuring OpenAI action: Error: URL Error: Invalid protocol"),
        (create_body(config={**CONFIG, "apiUrl": 12}), "1.apiUrl]: expected value of type [string] but got [number]"),
        (create_body(config={**CONFIG, "apiProvider": "Anthropic"}), "0.apiProvider]: expected value to equal [Azure OpenAI]"),
        (create_body(config={**CONFIG, "unknownKey": 1}), "config: [unknownKey]"),
        (create_body(config={**CONFIG, "headers": {"bad header": "x"}}), "config: [headers]"),
        (create_body(config={**CONFIG, "headers": {"X-Ok": 5}}), "config: [headers]"),
        (create_body(config={"apiProvider": "Other", "apiUrl": "http://localhost:11434/v1/chat/completions"}), "config: [defaultModel]"),
        (create_body(config={"apiProvider": "Azure OpenAI", "apiUrl": "https://x.openai.azure.com/openai/v1/chat/completions", "organizationId": "org"}), "config: [organizationId]"),
        (create_body(secrets={}), "secrets: [apiKey]: expected value of type [string] but got [undefined]"),
        (create_body(secrets={"apiKey": 5}), "secrets: [apiKey]: expected value of type [string] but got [number]"),
        (create_body(secrets={"apiKey": "k", "other": "x"}), "secrets: [other]: definition for this key is missing"),
        (create_body(config="not an object"), "[request body.config]: expected value of type [object] but got [string]"),
        ({"name": "x"}, "[request body.connector_type_id]: expected value of type [string] but got [undefined]"),
    ],
)
def test_validation_errors_are_400_and_name_the_field(client, connector_admin, body, field):
    response = call(client, "POST", "/api/actions/connector", connector_admin, body)
    assert response.status_code == 400, response.content
    data = response.json()
    assert data["statusCode"] == 400 and data["error"] == "Bad Request"
    assert field in data["message"], data["message"]
    assert SECRET not in response.content.decode()
    assert not Connector.objects.exists()


@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", "\"text\"", "{\"name\": "])
def test_a_body_that_is_not_a_json_object_is_400(client, connector_admin, raw):
    response = call(client, "POST", "/api/actions/connector", connector_admin, raw)
    assert response.status_code == 400
    assert response.json()["error"] == "Bad Request"


def test_a_wrong_method_is_405(client, connector_admin):
    response = call(client, "DELETE", "/api/actions/connectors", connector_admin)
    assert response.status_code == 405 and response["Allow"] == "GET"


def test_openapi_description_is_served(client):
    spec = client.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/actions/connector", "/api/actions/connector/{id}", "/api/actions/connectors",
                 "/api/actions/connector_types", "/api/actions/connector/{id}/_execute"):
        assert path in spec["paths"]


def test_the_openapi_description_names_the_openai_endpoint_errors_and_every_reference_resolves(client):
    spec = client.get("/api/openapi.json").json()
    responses = spec["paths"]["/api/openai/{id}/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "403", "404", "413", "502", "504", "default"} <= set(responses)
    assert responses["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OpenAIError"}

    def references(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from ([value] if key == "$ref" else references(value))
        elif isinstance(node, list):
            for item in node:
                yield from references(item)

    for ref in references(spec):
        assert ref.removeprefix("#/components/schemas/") in spec["components"]["schemas"], ref


class TestAuthentication:
    def test_no_credentials_is_401_with_a_basic_challenge(self, client):
        response = client.get("/api/actions/connectors")
        assert response.status_code == 401
        assert response.json()["statusCode"] == 401
        assert response["WWW-Authenticate"].startswith("Basic")

    def test_a_wrong_password_is_401(self, client, operator):
        response = client.get("/api/actions/connectors", HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(operator, "wrong"))
        assert response.status_code == 401

    @pytest.mark.parametrize("header", ["Basic !!!", "Basic " + "dXNlcm5vY29sb24=", "Negotiate abc", "ApiKey "])
    def test_malformed_credentials_are_401(self, client, operator, header):
        assert client.get("/api/actions/connectors", HTTP_AUTHORIZATION=header).status_code == 401

    def test_an_inactive_user_is_401(self, client, operator):
        operator.is_active = False
        operator.save()
        assert client.get("/api/actions/connectors", HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(operator)).status_code == 401

    @pytest.mark.parametrize("scheme", ["ApiKey", "Bearer"])
    def test_an_api_key_authenticates(self, client, operator, scheme):
        _record, key = create_api_key(operator, "ci")
        response = client.get("/api/actions/connectors", HTTP_AUTHORIZATION=f"{scheme} {key}")
        assert response.status_code == 200

    def test_a_revoked_api_key_is_401(self, client, operator):
        record, key = create_api_key(operator, "ci")
        assert client.get("/api/actions/connectors", HTTP_AUTHORIZATION=f"ApiKey {key}").status_code == 200
        record.revoked_at = record.created_at
        record.save()
        assert client.get("/api/actions/connectors", HTTP_AUTHORIZATION=f"ApiKey {key}").status_code == 401

    def test_a_session_authenticates_reads(self, client, operator):
        client.force_login(operator)
        assert client.get("/api/actions/connectors").status_code == 200

    def test_session_writes_need_the_csrf_token(self, connector_admin):
        from django.test import Client

        browser = Client(enforce_csrf_checks=True)
        browser.force_login(connector_admin)
        refused = browser.post("/api/actions/connector", json.dumps(create_body()), content_type="application/json")
        assert refused.status_code == 401 and "CSRF" in refused.json()["message"]
        browser.get("/connectors/")  # sets the csrftoken cookie
        token = browser.cookies["csrftoken"].value
        accepted = browser.post("/api/actions/connector", json.dumps(create_body()), content_type="application/json",
                                HTTP_X_CSRFTOKEN=token, HTTP_KBN_XSRF="true")
        assert accepted.status_code == 200

    def test_basic_auth_needs_no_csrf_token(self, connector_admin):
        from django.test import Client

        api_client = Client(enforce_csrf_checks=True)
        response = api_client.post("/api/actions/connector", json.dumps(create_body()), content_type="application/json",
                                   HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
        assert response.status_code == 200


ROLE_MATRIX = [
    # (method, path, body, {persona: expected status})
    ("GET", "/api/actions/connectors", None, {"connector_admin": 200, "operator": 200, "analyst": 403, "outsider": 403, "admin": 200}),
    ("GET", "/api/actions/connector/{id}", None, {"connector_admin": 200, "operator": 200, "analyst": 403, "outsider": 403, "admin": 200}),
    ("POST", "/api/actions/connector", "create", {"connector_admin": 200, "operator": 403, "analyst": 403, "outsider": 403, "admin": 200}),
    ("PUT", "/api/actions/connector/{id}", "update", {"connector_admin": 200, "operator": 403, "analyst": 403, "outsider": 403, "admin": 200}),
    ("DELETE", "/api/actions/connector/{id}", None, {"connector_admin": 204, "operator": 403, "analyst": 403, "outsider": 403, "admin": 204}),
    ("POST", "/api/actions/connector/{id}/_execute", "execute", {"connector_admin": 200, "operator": 200, "analyst": 403, "outsider": 403, "admin": 200}),
    ("GET", "/api/actions/connector_types", None, {"connector_admin": 200, "operator": 200, "analyst": 200, "outsider": 200, "admin": 200}),
]


@pytest.mark.parametrize("method, path, body, expected", ROLE_MATRIX, ids=[f"{m} {p}" for m, p, _, _ in ROLE_MATRIX])
@pytest.mark.parametrize("persona", ["connector_admin", "operator", "analyst", "outsider", "admin"])
def test_the_role_matrix(client, personas, make_connector, fake_openai, method, path, body, expected, persona):
    connector = make_connector(api_url=fake_openai.url("ok"))
    bodies = {
        "create": create_body(),
        "update": {"name": "Renamed", "config": {**CONFIG, "apiUrl": fake_openai.url("ok")}},
        "execute": {"params": {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": [{"role": "user", "content": "hi"}]})}}},
    }
    url = path.replace("{id}", connector.pk)
    response = call(client, method, url, personas[persona], bodies.get(body))
    assert response.status_code == expected[persona], response.content
    anonymous = call(client, method, url, None, bodies.get(body))
    assert anonymous.status_code == 401


class TestPreconfigured:
    @pytest.fixture
    def preconfigured(self, actions_config, fake_openai):
        actions_config({"preconfigured": {"shared-openai": {
            "name": "Shared OpenAI", "actionTypeId": ".gen-ai",
            "config": {"apiProvider": "OpenAI", "apiUrl": fake_openai.url("ok")},
            "secrets": {"apiKey": "sk-preconfigured-SECRET"},
        }}})

    def test_listed_and_readable_as_preconfigured(self, client, operator, preconfigured):
        listing = call(client, "GET", "/api/actions/connectors", operator).json()
        assert listing[0]["id"] == "shared-openai" and listing[0]["is_preconfigured"] is True
        one = call(client, "GET", "/api/actions/connector/shared-openai", operator)
        assert one.json()["name"] == "Shared OpenAI"
        assert "sk-preconfigured-SECRET" not in one.content.decode()

    def test_cannot_be_updated_or_deleted(self, client, connector_admin, preconfigured):
        update = call(client, "PUT", "/api/actions/connector/shared-openai", connector_admin, {"name": "x", "config": CONFIG})
        assert update.status_code == 400
        assert update.json()["message"] == "Preconfigured action shared-openai can not be updated."
        delete = call(client, "DELETE", "/api/actions/connector/shared-openai", connector_admin)
        assert delete.status_code == 400
        assert delete.json()["message"] == "Preconfigured action shared-openai is not allowed to delete."

    def test_its_id_cannot_be_taken(self, client, connector_admin, preconfigured):
        response = call(client, "POST", "/api/actions/connector/shared-openai", connector_admin, create_body())
        assert response.status_code == 400
        assert "already exists in a preconfigured action" in response.json()["message"]

    def test_can_be_executed(self, client, operator, preconfigured, fake_openai):
        body = {"params": {"subAction": "run", "subActionParams": {"body": json.dumps({"messages": [{"role": "user", "content": "hi"}]})}}}
        response = call(client, "POST", "/api/actions/connector/shared-openai/_execute", operator, body)
        assert response.json()["status"] == "ok"
        assert fake_openai.requests[-1].headers["authorization"] == "Bearer sk-preconfigured-SECRET"


@pytest.mark.parametrize("bad_key", ["sk-abc\ndef", "sk abc", "sk-abc\x00"])
def test_an_api_key_that_cannot_go_in_a_header_is_refused(client, connector_admin, bad_key):
    body = {"name": "n", "connector_type_id": ".gen-ai", "secrets": {"apiKey": bad_key},
            "config": {"apiProvider": "OpenAI", "apiUrl": "https://api.openai.com/v1/chat/completions"}}
    response = client.post("/api/actions/connector", body, content_type="application/json",
                           HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(connector_admin))
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("error validating action type secrets: [apiKey]: ") and bad_key not in message
