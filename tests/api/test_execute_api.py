"""POST /api/actions/connector/<id>/_execute: sub-actions, Kibana's envelope, and one event per execution."""

import json

import pytest

from tests.conftest import basic_auth
from tests.helpers.execute import HELLO, execute_body, execute_with_client, run_body
from usage.models import ExecutionEvent

pytestmark = pytest.mark.django_db

SECRET = "sk-exec-SECRET-0123456789"


def test_run_returns_the_providers_completion_in_the_envelope(client, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o-mini", api_key=SECRET)
    response = execute_with_client(client, connector, run_body(), user=operator)
    assert response.status_code == 200
    envelope = response.json()
    assert envelope["status"] == "ok" and envelope["connector_id"] == connector.pk
    assert envelope["data"]["object"] == "chat.completion"
    sent = fake_openai.requests[-1].json()
    # Kibana sets "stream" only for api.openai.com URLs (openai_utils.ts); a local server gets the body as sent.
    assert sent["model"] == "gpt-4o-mini" and "stream" not in sent
    event = ExecutionEvent.objects.get()
    assert (event.outcome, event.sub_action, event.source, event.user_name) == ("success", "run", "api", operator.username)
    assert (event.prompt_tokens, event.completion_tokens, event.total_tokens) == (9, 9, 18)
    assert (event.cached_tokens, event.reasoning_tokens, event.usage_source) == (2, 1, "provider")
    assert event.requested_model == "gpt-4o-mini" and event.response_model == "gpt-4o-mini"
    assert event.upstream_status == 200 and event.request_bytes > 0 and event.response_bytes > 0
    assert event.connector_name == connector.name and event.duration_ms > 0


def test_test_sub_action_behaves_like_run(client, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    assert execute_with_client(client, connector, run_body(sub_action="test"), user=operator).json()["status"] == "ok"
    assert ExecutionEvent.objects.get().sub_action == "test"


def test_the_callers_model_wins_over_the_default(client, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"), default_model="gpt-4o-mini")
    execute_with_client(client, connector, run_body({**HELLO, "model": "o3-mini"}), user=operator)
    assert fake_openai.requests[-1].json()["model"] == "o3-mini"


def test_invoke_ai_returns_the_trimmed_message_and_usage(client, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    params = {"params": {"subAction": "invokeAI", "subActionParams": {
        "messages": [{"role": "user", "content": "ping"}], "temperature": 0.2, "stop": ["END"], "tools": []}}}
    envelope = execute_with_client(client, connector, params, user=operator).json()
    assert envelope["status"] == "ok"
    assert envelope["data"]["message"] == "You said: ping"
    assert envelope["data"]["usage"]["total_tokens"] == 17
    sent = fake_openai.requests[-1].json()
    assert sent["temperature"] == 0.2 and sent["stop"] == ["END"] and sent["tools"] == []


def test_invoke_ai_forwards_every_param_kibana_forwards(client, operator, make_connector, fake_openai):
    # (docs/KIBANA.md 4.5) everything but signal, timeout and telemetryMetadata goes into the body.
    connector = make_connector(api_url=fake_openai.url("ok"))
    functions = [{"name": "lookup", "parameters": {"type": "object"}}]
    params = {"params": {"subAction": "invokeAI", "subActionParams": {
        "messages": [{"role": "user", "content": "ping"}], "n": 1, "functions": functions,
        "function_call": "auto", "model": "gpt-4o-mini", "response_format": {"type": "text"}, "timeout": 30000,
        "telemetryMetadata": {"pluginId": "security"}, "signal": {}}}}
    assert execute_with_client(client, connector, params, user=operator).json()["status"] == "ok"
    sent = fake_openai.requests[-1].json()
    assert sent["n"] == 1 and sent["functions"] == functions and sent["function_call"] == "auto"
    assert sent["model"] == "gpt-4o-mini" and sent["response_format"] == {"type": "text"}
    assert not {"timeout", "telemetryMetadata", "signal"} & set(sent)


@pytest.mark.parametrize(
    "scenario, usage",
    [("tool-call", {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}),
     ("no-choices", {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})],
)
def test_invoke_ai_without_text_answers_kibanas_unrecognized_format(client, operator, make_connector, fake_openai,
                                                                    scenario, usage):
    connector = make_connector(api_url=fake_openai.url(scenario))
    params = {"params": {"subAction": "invokeAI", "subActionParams": {"messages": [{"role": "user", "content": "x"}]}}}
    envelope = execute_with_client(client, connector, params, user=operator).json()
    assert envelope == {"status": "ok", "connector_id": connector.pk, "data": {
        "message": "An error occurred sending your message. \n\nAPI Error: The response from OpenAI was in an "
                   "unrecognized format.",
        "usage": usage}}


def test_an_unknown_sub_action_is_an_error_envelope(client, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    envelope = execute_with_client(client, connector, execute_body("dance"), user=operator).json()
    # Kibana throws it while running (retry true, framework), and "Connector name" is the
    # connector type's name, OpenAI (docs/KIBANA.md 4.2, 4.3).
    assert envelope == {
        "status": "error",
        "connector_id": connector.pk,
        "message": "an error occurred while running the action",
        "service_message": f'Sub action "dance" is not registered. Connector id: {connector.pk}. Connector name: OpenAI. Connector type: .gen-ai',
        "retry": True,
        "errorSource": "framework",
    }
    assert not fake_openai.requests
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and "not registered" in event.error_message


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"subActionParams": {}}, "[subAction]: expected value of type [string] but got [undefined]"),
        ({"subAction": 5}, "[subAction]: expected value of type [string] but got [number]"),
        ({"subAction": "run", "subActionParams": "x"}, "[subActionParams]: expected value of type [object] but got [string]"),
    ],
)
def test_invalid_top_level_params_are_a_user_error_not_retried(client, operator, make_connector, fake_openai, params,
                                                                fragment):
    # Kibana's params validation of a sub-action connector (docs/KIBANA.md 4.2): message, retry false, user.
    connector = make_connector(api_url=fake_openai.url("ok"))
    response = execute_with_client(client, connector, {"params": params}, user=operator)
    assert response.status_code == 200
    envelope = response.json()
    assert envelope == {"status": "error", "connector_id": connector.pk, "retry": False, "errorSource": "user",
                        "message": f"error validating action params: {fragment}"}
    assert not fake_openai.requests
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and event.error_message == envelope["message"]


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"subAction": "run", "subActionParams": {}}, "[body]: expected value of type [string] but got [undefined]"),
        ({"subAction": "run", "subActionParams": {"body": 5}}, "[body]: expected value of type [string] but got [number]"),
        ({"subAction": "run", "subActionParams": {"body": "{not json"}}, "[body]: body is not valid JSON"),
        ({"subAction": "run", "subActionParams": {"body": "[1]"}}, "[body]: body must be a JSON object"),
        ({"subAction": "run", "subActionParams": {"body": "{}", "timeout": -1}}, "[timeout]"),
        ({"subAction": "run", "subActionParams": {"body": "{}", "timeout": "soon"}}, "[timeout]: expected value of type [number] but got [string]"),
        ({"subAction": "run", "subActionParams": {"body": "{}", "extra": 1}}, "[extra]: definition for this key is missing"),
        ({"subAction": "invokeAI", "subActionParams": {"messages": []}}, "[messages]"),
        ({"subAction": "invokeAI", "subActionParams": {"messages": ["hi"]}}, "[messages.0]"),
        ({"subAction": "invokeAI", "subActionParams": {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}}, "[temperature]"),
    ],
)
def test_invalid_params_are_an_error_envelope_and_recorded(client, operator, make_connector, fake_openai, params, fragment):
    # a sub-action's own params fail "Request validation failed (...)", thrown while
    # running in Kibana (retry true), tagged as a user error (docs/KIBANA.md 4.3).
    connector = make_connector(api_url=fake_openai.url("ok"))
    response = execute_with_client(client, connector, {"params": params}, user=operator)
    assert response.status_code == 200
    envelope = response.json()
    assert envelope["status"] == "error" and envelope["retry"] is True and envelope["errorSource"] == "user"
    assert envelope["message"] == "an error occurred while running the action"
    assert envelope["service_message"].startswith("Request validation failed (Error: ")
    assert fragment in envelope["service_message"]
    assert not fake_openai.requests
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and event.error_message == envelope["service_message"]


@pytest.mark.parametrize("raw", ["not json", "[]", "{}", '{"params": "run"}'])
def test_a_malformed_request_body_is_400_and_still_recorded(client, operator, make_connector, fake_openai, raw):
    connector = make_connector(api_url=fake_openai.url("ok"))
    response = execute_with_client(client, connector, raw, user=operator)
    assert response.status_code == 400 and response.json()["error"] == "Bad Request"
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure"
    # The event says what the caller was told, word for word.
    assert event.error_message == response.json()["message"]
    assert not fake_openai.requests


def test_an_unknown_connector_is_404_and_not_recorded(client, operator):
    response = client.post("/api/actions/connector/nope/_execute", "{}", content_type="application/json",
                           HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=basic_auth(operator))
    assert response.status_code == 404
    assert not ExecutionEvent.objects.exists()


def test_provider_errors_become_kibanas_service_message(client, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("status-429"), api_key=SECRET)
    envelope = execute_with_client(client, connector, run_body(), user=operator).json()
    assert envelope["status"] == "error"
    assert envelope["message"] == "an error occurred while running the action"
    assert envelope["service_message"].startswith(
        "Status code: 429. Message: API Error: Too Many Requests - Simulated 429 from the fake server"
    )
    assert envelope["retry"] is True and "retry_after" not in envelope
    event = ExecutionEvent.objects.get()
    assert event.outcome == "failure" and event.upstream_status == 429
    assert SECRET not in json.dumps(envelope) and SECRET not in event.error_message


def test_a_stored_key_that_cannot_be_decrypted_is_a_clear_error(client, operator, make_connector, fake_openai, settings):
    connector = make_connector(api_url=fake_openai.url("ok"))
    settings.CONNECTORS_ENCRYPTION_KEYS = ["u1D3FwDUDbDyxxu3f-0U-9CTXz3rPmbXhmu5hgP7eS8="]
    envelope = execute_with_client(client, connector, run_body(), user=operator).json()
    assert envelope["status"] == "error"
    assert "cannot be decrypted" in envelope["service_message"]
    assert ExecutionEvent.objects.get().outcome == "failure"


def test_exactly_one_event_per_execution(client, operator, make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    for _ in range(5):
        execute_with_client(client, connector, run_body(), user=operator)
    execute_with_client(client, connector, {"params": {"subAction": "nope"}}, user=operator)
    assert ExecutionEvent.objects.count() == 6
    assert len(fake_openai.requests) == 5


class TestTestTab:
    def test_runs_as_test_and_reports_duration_and_usage(self, client, operator, make_connector, fake_openai):
        connector = make_connector(api_url=fake_openai.url("ok"))
        client.force_login(operator)
        response = client.post(f"/connectors/{connector.pk}/test/", json.dumps({"body": json.dumps(HELLO)}),
                               content_type="application/json")
        payload = response.json()
        assert payload["status"] == "ok" and payload["duration_ms"] > 0
        assert payload["usage"]["total_tokens"] == 18
        event = ExecutionEvent.objects.get()
        assert (event.source, event.sub_action) == ("ui_test", "test")

    def test_bad_json_in_the_body_is_an_error_without_calling_the_provider(self, client, operator, make_connector, fake_openai):
        connector = make_connector(api_url=fake_openai.url("ok"))
        client.force_login(operator)
        payload = client.post(f"/connectors/{connector.pk}/test/", json.dumps({"body": "{oops"}),
                              content_type="application/json").json()
        assert payload["status"] == "error" and "not valid JSON" in payload["service_message"]
        assert not fake_openai.requests
        assert ExecutionEvent.objects.get().error_message == payload["service_message"]

    def test_a_request_without_a_body_field_is_400_and_recorded_with_its_message(self, client, operator,
                                                                                  make_connector, fake_openai):
        connector = make_connector(api_url=fake_openai.url("ok"))
        client.force_login(operator)
        response = client.post(f"/connectors/{connector.pk}/test/", "[1]", content_type="application/json")
        assert response.status_code == 400
        event = ExecutionEvent.objects.get()
        assert (event.outcome, event.source, event.sub_action) == ("failure", "ui_test", "test")
        assert event.error_message == response.json()["message"]
        assert not fake_openai.requests

    @pytest.mark.parametrize("persona, status", [("analyst", 403), ("outsider", 403), ("connector_admin", 200), ("admin", 200)])
    def test_needs_the_execute_permission(self, client, personas, make_connector, fake_openai, persona, status):
        connector = make_connector(api_url=fake_openai.url("ok"))
        client.force_login(personas[persona])
        response = client.post(f"/connectors/{connector.pk}/test/", json.dumps({"body": "{}"}), content_type="application/json")
        assert response.status_code == status

    def test_anonymous_is_refused(self, client, make_connector, fake_openai):
        connector = make_connector(api_url=fake_openai.url("ok"))
        response = client.post(f"/connectors/{connector.pk}/test/", json.dumps({"body": "{}"}), content_type="application/json")
        assert response.status_code == 401
        assert not ExecutionEvent.objects.exists()

    def test_the_detail_page_prefills_the_body(self, client, operator, make_connector):
        connector = make_connector()
        client.force_login(operator)
        html = client.get(f"/connectors/{connector.pk}/").content.decode()
        assert "Hello world" in html and 'data-test-form' in html

    def test_an_other_connector_prefills_its_model(self, client, operator, make_connector):
        connector = make_connector(provider="Other", api_url="http://localhost:11434/v1/chat/completions", default_model="llama3.2")
        client.force_login(operator)
        html = client.get(f"/connectors/{connector.pk}/").content.decode()
        assert "&quot;model&quot;: &quot;llama3.2&quot;" in html

    def test_each_refusal_is_json_the_panel_can_show(self, client, personas, make_connector, fake_openai):
        connector = make_connector(api_url=fake_openai.url("ok"))
        url = f"/connectors/{connector.pk}/test/"
        body = json.dumps({"body": "{}"})
        anonymous = client.post(url, body, content_type="application/json")
        assert (anonymous.status_code, anonymous.json()["message"]) == (401, "Log in again: your session has ended.")
        client.force_login(personas["analyst"])
        refused = client.post(url, body, content_type="application/json")
        assert (refused.status_code, refused.json()["message"]) == (403, "You may not run connectors.")
        client.force_login(personas["connector_admin"])
        missing = client.post("/connectors/no-such-connector/test/", body, content_type="application/json")
        assert (missing.status_code, missing.json()["message"]) == (404, "No connector with that id.")
        assert not ExecutionEvent.objects.exists()  # refused before any execution was attempted
        malformed = client.post(url, json.dumps({"text": "{}"}), content_type="application/json")
        assert (malformed.status_code, malformed.json()["status"]) == (400, "error")
        # A malformed request is an execution attempt, recorded (as _execute's) with what the panel is told.
        assert ExecutionEvent.objects.get().error_message == malformed.json()["message"]
        assert not fake_openai.requests
