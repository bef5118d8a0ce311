"""Request shaping per provider (docs/KIBANA.md, 'Body shaping per provider'), checked on what a real
OpenAI-shaped server received."""

import dataclasses

import pytest

from connectors.models import Provider
from tests.helpers.outbound import HELLO, SECRET, assert_recorded_once, run
from tests.servers.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db


class AzureShapedServer(FakeOpenAI):
    """The fake server's ``azure`` behaviour on Azure's own paths (``/openai/deployments/<name>/...``)."""

    async def _respond(self, request, writer):
        return await super()._respond(dataclasses.replace(request, path="/azure" + request.path), writer)


@pytest.fixture(scope="module")
def azure_server():
    server = AzureShapedServer().start()
    yield server
    server.stop()


@pytest.fixture
def azure(azure_server):
    azure_server.clear()
    return azure_server


def received(server):
    assert len(server.requests) == 1, "exactly one upstream request"
    return server.requests[0]


def test_openai_sends_the_key_as_a_bearer_token(make_connector, fake_openai, caplog):
    connector = make_connector(api_url=fake_openai.url("ok"), api_key=SECRET)
    execution = run(connector)
    request = received(fake_openai)
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert "api-key" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert_recorded_once(execution, caplog, outcome="success")


def test_other_provider_sends_a_bearer_token_and_its_required_model(make_connector, fake_openai, caplog):
    connector = make_connector(provider=Provider.OTHER, api_url=fake_openai.url("ok"), default_model="llama3.1:8b",
                               api_key=SECRET)
    execution = run(connector)
    request = received(fake_openai)
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.json()["model"] == "llama3.1:8b"
    assert_recorded_once(execution, caplog, outcome="success")


def test_other_provider_without_a_key_sends_no_authorization(make_connector, fake_openai):
    connector = make_connector(provider=Provider.OTHER, api_url=fake_openai.url("ok"), default_model="m", api_key="")
    run(connector)
    assert "authorization" not in received(fake_openai).headers


def test_azure_sends_the_key_as_api_key_to_a_deployments_url(make_connector, azure, caplog):
    url = f"{azure.base_url}/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    connector = make_connector(provider=Provider.AZURE, api_url=url, api_key=SECRET)
    execution = run(connector)
    assert execution.envelope["status"] == "ok", execution.envelope
    request = received(azure)
    assert request.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert request.query == {"api-version": ["2024-10-21"]}
    assert request.headers["api-key"] == SECRET and "authorization" not in request.headers
    # The deployment in the URL is the model: none is inserted into the body, the event still names it.
    assert "model" not in request.json()
    event = assert_recorded_once(execution, caplog, outcome="success")
    assert event.requested_model == "gpt-4o-prod"


def test_an_azure_default_model_goes_into_a_body_without_one_behind_api_management(make_connector, azure, caplog):
    # the newest Kibana injects defaultModel for Azure (API Management and proxies route on it), and the
    # deployments path may sit behind a gateway prefix (docs/KIBANA.md 4.8).
    url = f"{azure.base_url}/gateway/team-a/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    connector = make_connector(provider=Provider.AZURE, api_url=url, api_key=SECRET, default_model="gpt-4o")
    execution = run(connector)
    assert execution.envelope["status"] == "ok", execution.envelope
    assert received(azure).json()["model"] == "gpt-4o"
    assert run(connector, {**HELLO, "model": "o3-mini"}).envelope["status"] == "ok"
    assert azure.requests[-1].json()["model"] == "o3-mini"


def test_an_azure_server_rejects_a_bearer_token_with_its_own_error(make_connector, azure, caplog):
    url = f"{azure.base_url}/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    connector = make_connector(provider=Provider.OPENAI, api_url=url, api_key=SECRET)
    execution = run(connector)
    assert execution.envelope["service_message"] == (
        "Status code: 401. Message: Unauthorized API Error - Access denied due to missing api-key"
    )
    assert execution.envelope["retry"] is True  # Kibana: every error thrown while running
    event = assert_recorded_once(execution, caplog, outcome="failure")
    assert event.upstream_status == 401


def test_custom_headers_are_sent_and_auth_wins_over_a_same_named_one(make_connector, fake_openai):
    headers = {"X-Team": "search", "authorization": "Bearer not-the-key", "Content-Type": "text/plain"}
    connector = make_connector(api_url=fake_openai.url("ok"), headers=headers, api_key=SECRET)
    run(connector)
    request = received(fake_openai)
    assert request.headers["x-team"] == "search"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["content-type"] == "application/json"


def test_azure_api_key_wins_over_a_custom_api_key_header(make_connector, azure):
    url = f"{azure.base_url}/openai/deployments/d/chat/completions?api-version=2024-10-21"
    connector = make_connector(provider=Provider.AZURE, api_url=url, headers={"API-Key": "wrong", "X-Env": "prod"},
                               api_key=SECRET)
    run(connector)
    request = received(azure)
    assert request.headers["api-key"] == SECRET and request.headers["x-env"] == "prod"


def test_openai_organization_and_project_are_sent_as_headers(make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"), organization_id="org-123", project_id="proj_456")
    run(connector)
    request = received(fake_openai)
    assert request.headers["openai-organization"] == "org-123"
    assert request.headers["openai-project"] == "proj_456"


def test_no_organization_headers_when_none_are_configured(make_connector, fake_openai):
    run(make_connector(api_url=fake_openai.url("ok")))
    assert "openai-organization" not in received(fake_openai).headers
    assert "openai-project" not in received(fake_openai).headers


@pytest.mark.parametrize(
    "default_model, body_model, sent_model",
    [
        ("gpt-4o-mini", None, "gpt-4o-mini"),
        ("gpt-4o-mini", "o3-mini", "o3-mini"),
        ("", None, "gpt-4.1"),  # Kibana's default (was gpt-4o)
    ],
)
def test_the_default_model_is_inserted_only_when_the_body_has_none(make_connector, fake_openai, default_model,
                                                                   body_model, sent_model):
    connector = make_connector(api_url=fake_openai.url("ok"), default_model=default_model)
    body = {**HELLO, **({"model": body_model} if body_model else {})}
    execution = run(connector, body)
    assert received(fake_openai).json()["model"] == sent_model
    assert execution.event.requested_model == sent_model


@pytest.mark.parametrize("sub_action", ["run", "test"])
def test_stream_is_forced_false_for_run_and_test_on_an_other_connector(make_connector, fake_openai, sub_action):
    # other_openai_utils.ts sets "stream" whatever the URL (an OpenAI connector only for api.openai.com).
    connector = make_connector(provider=Provider.OTHER, api_url=fake_openai.url("ok"), default_model="llama3")
    execution = run(connector, {**HELLO, "stream": True}, sub_action=sub_action)
    assert execution.envelope["status"] == "ok"
    sent = received(fake_openai).json()
    assert sent["stream"] is False and "stream_options" not in sent


def test_empty_tools_drop_tool_choice_and_parallel_tool_calls(make_connector, fake_openai):
    connector = make_connector(api_url=fake_openai.url("ok"))
    run(connector, {**HELLO, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True,
                    "functions": [], "function_call": "auto", "temperature": 0})
    sent = received(fake_openai).json()
    # openai_utils.ts deletes the dependants and keeps the empty lists themselves.
    for dropped in ("tool_choice", "parallel_tool_calls", "function_call"):
        assert dropped not in sent
    assert sent["tools"] == [] and sent["functions"] == []
    assert sent["temperature"] == 0


def test_non_empty_tools_are_passed_through(make_connector, fake_openai):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    connector = make_connector(api_url=fake_openai.url("ok"))
    run(connector, {**HELLO, "tools": tools, "tool_choice": "auto", "parallel_tool_calls": False})
    sent = received(fake_openai).json()
    assert sent["tools"] == tools and sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False


def test_the_url_loses_its_trailing_slash_and_doubled_slashes(make_connector, fake_openai):
    connector = make_connector(api_url=f"{fake_openai.base_url}//ok//v1///chat/completions/")
    execution = run(connector)
    assert execution.envelope["status"] == "ok"
    assert received(fake_openai).path == "/ok/v1/chat/completions"


def test_the_url_keeps_its_query(make_connector, fake_openai):
    run(make_connector(api_url=fake_openai.url("ok", query="tenant=a&x=1")))
    assert received(fake_openai).query == {"tenant": ["a"], "x": ["1"]}
