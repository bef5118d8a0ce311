"""What each space counts of a preconfigured connector (README "Spaces"): the connector is in every space, and each
space's dashboards, usage API, Logs tab, connector list and per-API-key breakdown count the calls made in that space
only, from rollups kept per space."""

from __future__ import annotations

import pytest

from connectors.accounts.api_keys import create_api_key
from connectors.spaces.models import Space
from tests.conftest import basic_auth
from tests.helpers.execute import run_body
from usage.models import ExecutionEvent

SHARED = "shared-openai"


@pytest.fixture
def marketing(db):
    return Space.objects.create(id="marketing", name="Marketing")


@pytest.fixture
def shared(actions_config, fake_openai):
    actions_config({"preconfigured": {SHARED: {
        "name": "Shared OpenAI", "actionTypeId": ".gen-ai",
        "config": {"apiProvider": "OpenAI", "apiUrl": fake_openai.url("ok")},
        "secrets": {"apiKey": "sk-preconfigured-SECRET"},
    }}})
    return SHARED


def execute(client, prefix: str, authorization: str, model: str = "gpt-4o") -> None:
    body = run_body({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    response = client.post(f"{prefix}/api/actions/connector/{SHARED}/_execute", body,
                           content_type="application/json", HTTP_KBN_XSRF="true", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 200 and response.json()["status"] == "ok", response.content


def test_each_space_counts_only_its_own_calls_of_a_preconfigured_connector(client, marketing, shared, operator,
                                                                           admin_user):
    _record, key = create_api_key(operator, "ci", space_id="marketing")
    for _ in range(2):
        execute(client, "", basic_auth(operator))
    execute(client, "/s/marketing", basic_auth(operator), model="gpt-4o-mini")
    for _ in range(2):
        execute(client, "/s/marketing", f"ApiKey {key}")
    events = {space: list(ExecutionEvent.objects.filter(space_id=space)) for space in ("default", "marketing")}
    assert {space: len(rows) for space, rows in events.items()} == {"default": 2, "marketing": 3}
    client.force_login(admin_user)

    for prefix, space in (("", "default"), ("/s/marketing", "marketing")):
        calls = events[space]
        tokens = sum(event.total_tokens for event in calls)
        assert tokens > 0
        api = client.get(f"{prefix}/api/usage/connectors/{SHARED}?range=24h").json()
        assert (api["totals"]["requests"], api["totals"]["total_tokens"]) == (len(calls), tokens), space
        by_key = {row["api_key"]: row["requests"] for row in api["by_api_key"]}
        expected_by_key = {}
        for event in calls:
            label = f"{event.api_key} of {operator.username}" if event.api_key else ""
            expected_by_key[label] = expected_by_key.get(label, 0) + 1
        assert by_key == expected_by_key, space
        assert {row["model"] for row in api["by_model"]} == {event.model for event in calls}, space

        dashboard = client.get(f"{prefix}/usage/connectors/{SHARED}/?range=24h")
        assert dashboard.context["report"].totals.requests == len(calls)
        overview = client.get(f"{prefix}/usage/?range=24h").context["rows"]
        assert {row.connector.id: row.sums.requests for row in overview}[SHARED] == len(calls)
        counts = client.get(f"{prefix}/connectors/{SHARED}/logs/?range=24h").context["counts"]
        assert sum(count.count for count in counts) == len(calls)
        rows = {row.connector.pk: row for row in client.get(f"{prefix}/connectors/?sort=last").context["rows"]}
        assert rows[SHARED].recent.requests == len(calls)
        assert rows[SHARED].last.timestamp == max(event.timestamp for event in calls)

    # Sliced by the marketing key: its two calls, in its space; in the default space the key made none.
    sliced = client.get(f"/s/marketing/api/usage/connectors/{SHARED}?range=24h&api_key={_record.pk}").json()
    assert sliced["totals"]["requests"] == 2
    assert client.get(f"/api/usage/connectors/{SHARED}?range=24h&api_key={_record.pk}").json()["totals"]["requests"] == 0
    counts = client.get(f"/s/marketing/connectors/{SHARED}/logs/?range=24h&api_key={_record.pk}").context["counts"]
    assert sum(count.count for count in counts) == 2
